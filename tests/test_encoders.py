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
    for_corpus,
    get_encoder,
    l2_normalise,
    probe_distance,
)
from finerouter.encoders import sentence_transformer as st_module
from finerouter.encoders.probes import PROBE_SENTENCES, fingerprint_from_probes
from finerouter.errors import EncoderError, ParameterError

DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2|msl=256"
DEFAULT_ID = DEFAULT_MODEL_ID


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


@pytest.mark.parametrize("native_bf16", [True, False])
def test_float32_is_the_default_whatever_the_cpu(monkeypatch, native_bf16):
    # Embeddings must not depend on the machine: bfloat16 only when asked for, on AVX2 and AMX CPUs alike.
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: native_bf16)
    for enc in (SentenceTransformerEncoder(), get_encoder(), SentenceTransformerEncoder(precision="float32")):
        assert enc.precision == "float32" and enc.resolved_precision == "float32" and enc.name == DEFAULT_NAME
        assert enc.config()["precision"] == "float32"
    bf16 = SentenceTransformerEncoder(precision="bfloat16")
    assert bf16.resolved_precision == "bfloat16" and bf16.name == DEFAULT_NAME + "|bf16"
    # "auto" stays an explicit opt-in: bfloat16 only on a CPU with native bf16.
    auto = SentenceTransformerEncoder(precision="auto")
    assert auto.resolved_precision == ("bfloat16" if native_bf16 else "float32")
    assert auto.name == DEFAULT_NAME + ("|bf16" if native_bf16 else "")
    assert SentenceTransformerEncoder(device="cuda", precision="auto").resolved_precision == "float32"


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cache_key_includes_the_precision(monkeypatch, tmp_path, native_bf16):
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: native_bf16)
    f32 = get_encoder(cache_dir=tmp_path)
    bf16 = get_encoder(cache_dir=tmp_path, precision="bfloat16")
    auto = get_encoder(cache_dir=tmp_path, precision="auto")
    assert f32.directory != bf16.directory
    assert auto.directory == (bf16.directory if native_bf16 else f32.directory)


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


# --- the precision a router artifact was fitted with ---------------------------------------------------


@pytest.fixture(scope="module")
def saved_float32_router(cached_minilm, tmp_path_factory):
    """A router fitted with the default encoder on small synthetic data, saved."""
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    fast = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2}}
    router = FineRouter(encoder=cached_minilm, seed=0, **fast).fit(data)
    return router, router.save(tmp_path_factory.mktemp("precision") / "router")


def _manifest_encoder(path) -> dict:
    import json

    return json.loads((path / "manifest.json").read_text())["encoder"]


@pytest.mark.slow
@pytest.mark.parametrize("native_bf16", [True, False])
def test_router_artifact_records_float32_and_loads_it_on_any_cpu(saved_float32_router, monkeypatch, native_bf16):
    from finerouter.routing.router import FineRouter

    router, path = saved_float32_router
    assert _manifest_encoder(path)["config"]["precision"] == "float32"
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: native_bf16)
    loaded = FineRouter.load(path)
    assert loaded.encoder_.resolved_precision == "float32" and loaded.encoder_.name == DEFAULT_NAME
    prompts = ["Solve for x: 3x + 7 = 22.", "Write a haiku about autumn rain."]
    assert [d.model for d in loaded.route(prompts)] == [d.model for d in router.route(prompts)]


@pytest.mark.slow
def test_bfloat16_router_artifact_loads_in_bfloat16_or_is_refused(saved_float32_router, monkeypatch, tmp_path):
    from finerouter.errors import ArtifactError
    from finerouter.routing.router import FineRouter

    router, _ = saved_float32_router
    monkeypatch.setattr(router, "encoder_", SentenceTransformerEncoder(precision="bfloat16"))
    path = router.save(tmp_path / "bf16")
    assert _manifest_encoder(path)["config"]["precision"] == "bfloat16"
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: False)
    with pytest.raises(ArtifactError, match=r"fitted with its encoder in bfloat16.*no native bfloat16"):
        FineRouter.load(path)
    explicit = FineRouter.load(path, encoder=SentenceTransformerEncoder(precision="bfloat16"))  # the user's choice
    assert explicit.encoder_.resolved_precision == "bfloat16"
    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: True)
    loaded = FineRouter.load(path)
    assert loaded.encoder_.resolved_precision == "bfloat16" and loaded.encoder_.name == DEFAULT_NAME + "|bf16"


@pytest.mark.parametrize("native_bf16", [True, False])
def test_artifacts_saved_without_a_precision_load_as_their_name_says(monkeypatch, tmp_path, native_bf16):
    from finerouter.errors import ArtifactError
    from finerouter.routing.artifact import load_encoder as _load_encoder

    monkeypatch.setattr(st_module, "cpu_supports_bf16", lambda: native_bf16)
    old_spec = {"model": None, "max_seq_length": 256, "batch_size": 64}  # what older versions wrote
    enc = _load_encoder({"name": DEFAULT_NAME, "spec": old_spec}, None, None, tmp_path)
    assert enc.resolved_precision == "float32" and enc.name == DEFAULT_NAME
    bf16_info = {"name": DEFAULT_NAME + "|bf16", "spec": old_spec}
    if native_bf16:
        assert _load_encoder(bf16_info, None, None, tmp_path).resolved_precision == "bfloat16"
    else:
        with pytest.raises(ArtifactError, match="no native bfloat16"):
            _load_encoder(bf16_info, None, None, tmp_path)


# --- long texts ------------------------------------------------------------------------------------------


def _long_text(n_chars: int, seed: int = 0) -> str:
    words = (
        "the model router answers questions about python code algebra history poems translation of french "
        "sentences summaries tables databases proofs and recipes while users wait for quick replies"
    ).split()
    rng = np.random.default_rng(seed)
    text = " ".join(words[i] for i in rng.integers(0, len(words), size=n_chars // 5))
    return ("Please review this long document. " + text)[:n_chars]


def test_texts_are_cut_to_what_the_encoder_can_read():
    enc = SentenceTransformerEncoder(max_seq_length=128)
    assert enc.max_chars == 128 * st_module.MAX_CHARS_PER_TOKEN
    assert SentenceTransformerEncoder().max_chars == 256 * st_module.MAX_CHARS_PER_TOKEN


@pytest.mark.slow
@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
def test_a_megabyte_prompt_is_cut_before_tokenising_without_changing_its_embedding(minilm, monkeypatch, truncation):
    enc = SentenceTransformerEncoder(truncation=truncation, precision="float32")
    big = _long_text(1_000_000)
    model = minilm._load()
    if truncation == "head":
        # What the model reads of the whole text, tokenised in full (as sentence-transformers does on its own).
        reference = l2_normalise(model.encode([big], convert_to_numpy=True, normalize_embeddings=False))
    else:  # the last tokens of the whole text (and, for head_tail, its first), tokenised in full
        ids = model.tokenizer(big, add_special_tokens=False)["input_ids"]
        n_head = int((enc.max_seq_length - 4) * 0.25) if truncation == "head_tail" else 0
        tail = model.tokenizer.decode(ids[-(enc.max_seq_length - 4 - n_head):])
        head = model.tokenizer.decode(ids[:n_head]) + "\n" if n_head else ""
        reference = minilm.encode([head + tail])

    seen: list[int] = []
    tokenizer_class = type(model.tokenizer)
    original = tokenizer_class.__call__

    def spy(self, *args, **kwargs):
        text = kwargs.get("text", args[0] if args else None)
        seen.extend(len(t) for t in ([text] if isinstance(text, str) else text))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tokenizer_class, "__call__", spy)
    emb = enc.encode([big, "a short prompt"])
    assert seen and max(seen) <= enc.max_chars < len(big)
    np.testing.assert_allclose(emb[:1], reference, atol=1e-6 if truncation == "head" else 0.02)


# --- which part of a long prompt the model reads ------------------------------------------------------

_PREAMBLE = "Answer the science question with one letter. " + " ".join(
    f"Example {i}: which gas do plants take in from the air? A) oxygen B) carbon dioxide C) helium. Answer: B."
    for i in range(40)
)  # a shared few-shot preamble of about 4,000 characters, far beyond 256 tokens
_QUESTIONS = ["Why does ice float on liquid water?", "Which planet in the solar system has the longest day?"]


def test_truncation_is_validated_named_and_recorded():
    with pytest.raises(ParameterError, match="'truncation' parameter of SentenceTransformerEncoder"):
        SentenceTransformerEncoder(truncation="middle")
    assert SentenceTransformerEncoder(truncation="head", precision="float32").name == DEFAULT_ID + "|msl=256"
    for mode in ("tail", "head_tail"):
        enc = SentenceTransformerEncoder(truncation=mode, precision="float32")
        assert enc.name == f"{DEFAULT_ID}|msl=256|trunc={mode}"  # caches and artifacts never mix two cuts
        assert enc.config()["truncation"] == mode
        assert SentenceTransformerEncoder.from_config(enc.config()).name == enc.name
    # An artifact written before the option existed read the head of long prompts, and keeps doing so; so
    # does one whose "auto" was never resolved to anything else.
    old = {"model": None, "max_seq_length": 256, "batch_size": 64, "precision": "float32"}
    assert SentenceTransformerEncoder.from_config(old).truncation == "head"
    assert SentenceTransformerEncoder.from_config({**old, "truncation": "auto"}).truncation == "head"
    auto = SentenceTransformerEncoder(precision="float32")
    assert auto.truncation == "auto" and auto.name == DEFAULT_NAME  # it reads the head until a corpus says not to


def test_auto_truncation_reads_head_and_tail_only_for_a_corpus_that_shares_its_first_tokens(tmp_path):
    shared = [_PREAMBLE + f" Question {i}: " + q for i, q in enumerate(_QUESTIONS * 10)]
    distinct = [f"Prompt {i} about topic {i * 7}: " + _PREAMBLE[i * 50:] for i in range(20)]
    auto = SentenceTransformerEncoder(precision="float32")
    assert auto.window_texts(shared) == [t[: auto.max_chars] for t in shared]  # unresolved: the head
    chosen = auto.for_corpus(shared + ["a short prompt"] * 3)
    assert chosen is not auto and chosen.truncation == "head_tail" and chosen.name.endswith("|trunc=head_tail")
    assert chosen.window_texts(shared[:1])[0].endswith(_QUESTIONS[0])
    assert auto.for_corpus(distinct) is auto  # long prompts whose heads differ: read as before
    assert auto.for_corpus(["short"] * 5) is auto
    head = SentenceTransformerEncoder(truncation="head", precision="float32")
    assert head.for_corpus(shared) is head  # an explicit choice stands
    # A share below the threshold (one prompt in 25 collides) keeps the head.
    assert auto.for_corpus(shared[:2] + distinct + ["x"] * 3 + [f"p{i}" for i in range(30)]) is auto
    cached = get_encoder(None, cache_dir=tmp_path, precision="float32")
    assert for_corpus(cached, distinct) is cached
    wrapped = for_corpus(cached, shared)
    assert isinstance(wrapped, CachedEncoder) and wrapped.name == chosen.name and wrapped.cache_dir == tmp_path
    assert wrapped.directory != cached.directory  # never mixes vectors of two cuts


def test_the_window_keeps_the_end_of_a_long_prompt_under_tail_and_head_tail():
    texts = [_PREAMBLE + " " + q for q in _QUESTIONS] + ["a short prompt"]
    head = SentenceTransformerEncoder(truncation="head", precision="float32")
    assert head.window_texts(texts) == [t[: head.max_chars] for t in texts]
    for mode in ("tail", "head_tail"):
        enc = SentenceTransformerEncoder(truncation=mode, precision="float32")
        windows = enc.window_texts(texts)
        assert windows[2] == "a short prompt"  # what fits is read whole
        for text, window, question in zip(texts, windows, _QUESTIONS):
            assert window.endswith(question) and len(window) < len(text)
            assert enc.count_tokens([window])[0] <= enc.max_seq_length - 2  # the model reads all of it
            if mode == "tail":
                assert text.endswith(window)
            else:
                start, _, end = window.partition("\n")
                assert text.startswith(start) and text.endswith(end) and len(start) > 0
                assert enc.count_tokens([start])[0] == int((enc.max_seq_length - 2 - 2) * 0.25)
    with pytest.raises(ParameterError, match=r"texts\[1\] must be a str"):
        SentenceTransformerEncoder(truncation="tail").encode(["a", 3])


@pytest.mark.slow
def test_prompts_that_share_a_long_preamble_differ_only_when_their_ends_are_read(minilm):
    texts = [_PREAMBLE + " " + q for q in _QUESTIONS]
    a, b = minilm.encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-6)  # the head: the preamble alone, the same for both
    for mode in ("tail", "head_tail"):
        enc = SentenceTransformerEncoder(truncation=mode, precision="float32")
        a, b = enc.encode(texts)
        assert a @ b < 0.98
        np.testing.assert_allclose(enc.encode(["a short prompt"]), minilm.encode(["a short prompt"]), atol=1e-6)


@pytest.mark.slow
def test_a_router_fitted_on_prompts_with_a_shared_preamble_reads_their_ends_and_saves_that(minilm, tmp_path):
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter

    base = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    data = base.subset(range(base.n_prompts))
    data.prompts = [_PREAMBLE + "\n\n" + p for p in base.prompts]  # every prompt opens with the same examples
    fast = {"classifier": {"epochs": 5}, "quality": {"epochs_general": 3, "epochs_task": 2}}
    router = FineRouter(encoder=minilm, seed=0, mixing="paper", ensemble_size=1, **fast).fit(data)
    assert router.encoder_.name == DEFAULT_NAME + "|trunc=head_tail" and minilm.truncation == "auto"
    assert router.fit_summary_["encoder"] == router.encoder_.name
    emb = router.encoder_.encode(data.prompts[:2])
    assert emb[0] @ emb[1] < 0.99  # the questions are read: two prompts are two texts
    loaded = FineRouter.load(router.save(tmp_path / "router"))
    assert _manifest_encoder(tmp_path / "router")["config"]["truncation"] == "head_tail"
    assert loaded.encoder_.name == router.encoder_.name
    assert FineRouter.load(tmp_path / "router", encoder="minilm").encoder_.name == router.encoder_.name
    with pytest.warns(UserWarning, match="reading prompts longer than its window at other tokens"):
        FineRouter.load(tmp_path / "router", encoder=SentenceTransformerEncoder(truncation="head"))
    assert [d.model for d in loaded.route(data.prompts[:20])] == [d.model for d in router.route(data.prompts[:20])]
    # The task classifier embeds each task's central prompt whole (cut as prompts are), not its first 160
    # characters, which are the preamble for every task.
    from finerouter.routing.fitting import task_texts

    texts = task_texts(router, router.encoder_, router.catalog_)
    assert router.catalog_.n_tasks >= 2 and len(set(texts)) == router.catalog_.n_tasks
    assert all(t.startswith(_PREAMBLE[:100]) and t in data.prompts for t in texts)
    assert len({task.description for task in router.catalog_.tasks}) == 1  # what it would have embedded
    # The same questions without the preamble: a corpus whose heads differ is read from the head, as before.
    plain = FineRouter(encoder=minilm, seed=0, mixing="paper", ensemble_size=1, **fast).fit(base)
    assert plain.encoder_.name == DEFAULT_NAME
    assert task_texts(plain, plain.encoder_, plain.catalog_) == [t.description for t in plain.catalog_.tasks]


def test_the_shared_head_share_counts_unique_prompts_and_reads_a_bounded_sample():
    from finerouter.encoders.windows import shared_head_share

    tokenizer = SentenceTransformerEncoder(precision="float32")._counting_tokenizer()
    shared = [_PREAMBLE + q for q in ("one", "two", "three", "four")]
    distinct = [f"Prompt {i}: " + _PREAMBLE[i * 40:] for i in range(16)]
    assert shared_head_share(tokenizer, shared + distinct, 256, 8192) == pytest.approx(4 / 20)
    assert shared_head_share(tokenizer, shared * 5 + distinct, 256, 8192) == pytest.approx(4 / 20)  # duplicates once
    assert shared_head_share(tokenizer, distinct + ["short"] * 3, 256, 8192) == 0.0
    assert shared_head_share(tokenizer, [], 256, 8192) == 0.0
    # 10 evenly spaced of the 20 unique prompts (0, 2, 4, ..., 16, 19): two of the shared ones, over 10.
    assert shared_head_share(tokenizer, shared + distinct, 256, 8192, max_texts=10) == pytest.approx(0.2)
