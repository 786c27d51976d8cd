"""SentenceTransformerEncoder, get_encoder and encoder fingerprints."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from finerouter.encoders import (
    DEFAULT_MODEL_ID,
    CachedEncoder,
    SentenceTransformerEncoder,
    get_encoder,
    l2_normalise,
    probe_distance,
)
from finerouter.encoders import sentence_transformer as st_module
from finerouter.encoders.probes import PROBE_SENTENCES, fingerprint_from_probes
from finerouter.errors import EncoderError, ParameterError

DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2|msl=256"


def test_import_and_construction_load_nothing_heavy():
    code = (
        "import sys\n"
        "from finerouter.encoders import SentenceTransformerEncoder, get_encoder\n"
        "enc = get_encoder(precision='float32')\n"
        "print(enc.name)\n"
        "assert 'torch' not in sys.modules and 'sentence_transformers' not in sys.modules, 'heavy import'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == DEFAULT_NAME


@pytest.mark.parametrize("model", [None, DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"])
def test_default_name_is_stable_and_has_no_path(model):
    enc = SentenceTransformerEncoder(model, precision="float32")
    assert enc.name == DEFAULT_NAME
    assert "site-packages" not in enc.name
    packaged = str(st_module.packaged_model_path())
    assert SentenceTransformerEncoder(packaged, precision="float32").name == DEFAULT_NAME
    assert SentenceTransformerEncoder(max_seq_length=128, precision="float32").name.endswith("|msl=128")


def test_precision_resolution(monkeypatch):
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: True)
    auto = SentenceTransformerEncoder()
    assert auto.resolved_precision == "bfloat16" and auto.name == DEFAULT_NAME + "|bf16"
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: False)
    assert SentenceTransformerEncoder().resolved_precision == "float32"
    assert SentenceTransformerEncoder().name == DEFAULT_NAME
    assert SentenceTransformerEncoder(precision="bfloat16").name.endswith("|bf16")
    assert SentenceTransformerEncoder(device="cuda", precision="auto").resolved_precision == "float32"


def test_cpu_bf16_detection_reads_cpuinfo():
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        pass
    expected = "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
    assert st_module.cpu_supports_bf16() is expected


def test_local_folder_name_is_location_independent_and_content_sensitive(tmp_path):
    def make(folder, weights: bytes):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"hidden_size": 8}')
        (folder / "modules.json").write_text("[]")
        (folder / "model.safetensors").write_bytes(weights)
        return folder

    weights = bytes(range(256)) * 1000
    a = make(tmp_path / "one" / "my-encoder", weights)
    b = make(tmp_path / "two" / "my-encoder", weights)
    changed = bytearray(weights)
    changed[len(changed) // 2] ^= 1  # one byte of the middle window
    c = make(tmp_path / "three" / "my-encoder", bytes(changed))
    name_a = SentenceTransformerEncoder(a, precision="float32").name
    assert name_a.startswith("my-encoder@") and name_a.endswith("|msl=256")
    assert str(tmp_path) not in name_a
    assert SentenceTransformerEncoder(b, precision="float32").name == name_a
    assert SentenceTransformerEncoder(c, precision="float32").name != name_a


def test_parameter_validation_messages():
    with pytest.raises(ParameterError) as err:
        SentenceTransformerEncoder(max_seq_length=0)
    assert str(err.value) == (
        "The 'max_seq_length' parameter of SentenceTransformerEncoder must be an int in [1, inf). Got 0."
    )
    with pytest.raises(ParameterError, match="'precision' parameter of SentenceTransformerEncoder"):
        SentenceTransformerEncoder(precision="fp16")
    with pytest.raises(ParameterError, match="'batch_size'"):
        SentenceTransformerEncoder(batch_size=0)
    with pytest.raises(ParameterError, match="'device'"):
        SentenceTransformerEncoder(device="")


def test_bad_inputs_fail_before_loading_the_model(tmp_path):
    enc = SentenceTransformerEncoder(precision="float32")
    with pytest.raises(ParameterError, match="not a single str"):
        enc.encode("one string")
    with pytest.raises(ParameterError, match=r"texts\[2\] must be a str. Got NoneType"):
        enc.encode(["a", "b", None])
    weights_file = tmp_path / "model.safetensors"
    weights_file.write_bytes(b"x")
    with pytest.raises(EncoderError, match="is a file"):
        SentenceTransformerEncoder(weights_file).encode(["a"])
    assert enc._st is None


def test_get_encoder_specs(tmp_path):
    enc = get_encoder(max_seq_length=64, precision="float32")
    assert isinstance(enc, SentenceTransformerEncoder) and enc.name == DEFAULT_MODEL_ID + "|msl=64"
    cached = get_encoder(None, cache_dir=tmp_path, precision="float32")
    assert isinstance(cached, CachedEncoder) and cached.name == DEFAULT_NAME
    assert get_encoder(enc) is enc
    with pytest.raises(ParameterError, match="only apply to a model name or path"):
        get_encoder(enc, batch_size=4)
    with pytest.raises(ParameterError, match="'spec' parameter of get_encoder"):
        get_encoder(42)


def test_fingerprint_ignores_noise_but_not_another_model():
    iu = np.triu_indices(len(PROBE_SENTENCES), k=1)
    for seed in range(1000):
        # Pick probes whose cosines all sit away from a rounding boundary, so the noise check is not luck.
        rng = np.random.default_rng(seed)
        probes = l2_normalise(rng.standard_normal((len(PROBE_SENTENCES), 64)))
        gram = probes.astype(np.float64) @ probes.T.astype(np.float64)
        if np.min(np.abs((gram[iu] * 100) % 1 - 0.5)) > 0.02:
            break
    noisy = l2_normalise(probes + rng.standard_normal(probes.shape).astype(np.float32) * 1e-7)
    assert fingerprint_from_probes(noisy) == fingerprint_from_probes(probes)
    assert probe_distance(noisy, probes) < 1e-5
    other = l2_normalise(rng.standard_normal(probes.shape))
    assert fingerprint_from_probes(other) != fingerprint_from_probes(probes)
    assert probe_distance(other, probes) > 0.1


def test_missing_hub_model_raises_encoder_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = SentenceTransformerEncoder("finerouter-test/no-such-model-anywhere", precision="float32")
    assert enc.name == "finerouter-test/no-such-model-anywhere|msl=256"
    with pytest.raises(EncoderError, match="Could not load encoder model 'finerouter-test/no-such-model-anywhere'"):
        enc.encode(["hello"])


# --- the real packaged MiniLM -------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_shape_norm_and_semantics(minilm):
    texts = [
        "How do I reverse a list in Python?",
        "What is the way to invert the order of a Python list?",
        "Who won the football world cup in 1998?",
        "",
    ]
    emb = minilm.encode(texts)
    assert emb.dtype == np.float32 and emb.shape == (4, 384) and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb[:3], axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.7 and sim[0, 2] < 0.3 and sim[0, 1] - sim[0, 2] > 0.4
    # Batching and order do not change a text's vector.
    single = np.vstack([minilm.encode([t]) for t in texts[:3]])
    np.testing.assert_allclose(single, emb[:3], atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_minilm_fingerprint_is_the_published_constant(minilm):
    # Cosines of the probe sentences rounded to 0.01: the same on every machine running float32 MiniLM.
    assert minilm.fingerprint() == "6d9c8ecedc0d2996"


@pytest.mark.slow
def test_max_seq_length_truncates_and_is_bounded(minilm):
    short = SentenceTransformerEncoder(max_seq_length=8, precision="float32")
    base = "Translate the following sentence into German please"
    a, b = short.encode([base + " and be quick about it.", base + " while keeping the tone formal."])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tails fall beyond 8 tokens
    full = minilm.encode([base + " and be quick about it.", base + " while keeping the tone formal."])
    assert full[0] @ full[1] < 0.99
    assert short.fingerprint() != minilm.fingerprint()  # a different setting is detected as a different encoder
    with pytest.raises(ParameterError, match=r"must be an int in \[1, 512\]"):
        SentenceTransformerEncoder(max_seq_length=4096, precision="float32").encode(["x"])
