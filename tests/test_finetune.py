"""Fine-tuning the encoder (finerouter.encoders.finetune): on a planted signal the frozen MiniLM misses, the real
MiniLM learns it; the output is a sentence-transformers folder with its own identity; an interrupted run resumes
to the same weights as one never interrupted; checkpoints are atomic; unobserved scores count for nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter.data.dataset import RoutingDataset
from finerouter.encoders.finetune import RECORD_FILE, EncoderFineTuner
from finerouter.encoders.finetune_state import checkpoint_dir, observed_mse, read_state
from finerouter.encoders.sentence_transformer import SentenceTransformerEncoder
from finerouter.errors import DataError, ParameterError

#: Small and fast on the real MiniLM: short sequences, a linear head, a large enough lr to move in two epochs.
FAST = {"epochs": 2, "lr": 1e-4, "head_hidden": 0, "head_epochs": 10, "batch_size": 16, "max_seq_length": 32,
        "dev_fraction": 0.25, "patience": 2, "threads": 1}


@pytest.fixture(scope="module")
def planted() -> RoutingDataset:
    """60 prompts on varied topics; which of two models is good depends only on the language the prompt asks
    for, a detail the frozen MiniLM's embedding barely carries. Some scores are unobserved (NaN), one prompt has
    none at all."""
    from finerouter.data.synthetic import make_synthetic_routing_data

    base = make_synthetic_routing_data(n_prompts=60, n_models=2, seed=0)
    french = np.random.default_rng(0).integers(0, 2, 60).astype(bool)
    prompts = [f"{p} (reply in {'French' if f else 'English'})" for p, f in zip(base.prompts, french)]
    scores = np.stack([np.where(french, 0.9, 0.1), np.where(french, 0.1, 0.9)], axis=1)
    scores[[3, 10, 17], 0] = np.nan
    scores[[5, 22], 1] = np.nan
    scores[40] = np.nan
    return RoutingDataset(prompts=prompts, models=["a", "b"], scores=scores, tasks=base.tasks)


@pytest.fixture(scope="module")
def tuned(planted, tmp_path_factory):
    """One uninterrupted two-epoch run: ``(tuner, output folder)``."""
    out = tmp_path_factory.mktemp("tuned") / "encoder"
    tuner = EncoderFineTuner(**FAST)
    tuner.fit(planted, out)
    return tuner, out


@pytest.mark.slow
def test_fine_tuning_learns_a_planted_signal_the_frozen_encoder_misses(tuned):
    tuner, _ = tuned
    dev = [h["dev_mse"] for h in tuner.history_]
    train = [h["train_mse"] for h in tuner.history_]
    assert train[1] < train[0]
    assert dev[1] < dev[0] < tuner.baseline_dev_mse_
    assert tuner.best_dev_mse_ < 0.8 * tuner.baseline_dev_mse_  # the head alone on frozen vectors does worse
    assert tuner.best_epoch_ == 2
    assert all(h["prompts_per_second"] > 0 for h in tuner.history_)


@pytest.mark.slow
def test_the_output_is_a_sentence_transformers_folder_with_its_own_identity(tuned, planted, minilm):
    tuner, out = tuned
    assert not checkpoint_dir(out).exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert (out / "modules.json").is_file() and (out / "model.safetensors").is_file()
    record = json.loads((out / RECORD_FILE).read_text())
    encoder = SentenceTransformerEncoder(model=out, truncation=record["settings"]["truncation"])
    assert encoder.name.startswith("encoder@") and encoder.name != minilm.name
    assert tuner.encoder_.name == encoder.name
    # It reads long prompts as it was trained to: the base's "auto" choice for these prompts.
    base = SentenceTransformerEncoder(max_seq_length=32).for_corpus(planted.prompts)
    assert record["settings"]["truncation"] == ("head" if base.truncation == "auto" else base.truncation)
    emb = encoder.encode(planted.prompts[:8])
    assert emb.shape == (8, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(emb, minilm.encode(planted.prompts[:8]), atol=1e-3)
    assert record["settings"]["base"] == base.name
    assert record["best_epoch"] == 2 and len(record["history"]) == 2
    # the prompt without any observed score is left out; NaN scores elsewhere give finite losses
    assert tuner.n_fit_ + tuner.n_dev_ == planted.n_prompts - 1
    assert record["data"]["n_fit"] == tuner.n_fit_ and np.isfinite([h["dev_mse"] for h in tuner.history_]).all()


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tuned, planted, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "encoder"
    ckpt = checkpoint_dir(out)
    real_save, calls = torch.save, []

    def crash_on_the_third_checkpoint(obj, path, *args, **kwargs):  # a kill while epoch 2's checkpoint is written
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_on_the_third_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        EncoderFineTuner(**FAST).fit(planted, out)
    monkeypatch.setattr(torch, "save", real_save)
    # the checkpoint is epoch 1's, whole; the half-written epoch 2 and the output are nowhere
    assert not out.exists() and read_state(ckpt)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.name]
    (tmp_path / f".{ckpt.name}.abc.tmp").mkdir()  # what a SIGKILL mid-write leaves behind

    with pytest.raises(ParameterError, match="unfinished fine-tuning run \\(epoch 1 of 2\\).*--resume"):
        EncoderFineTuner(**FAST).fit(planted, out)
    with pytest.raises(ParameterError, match="other settings \\(epochs=2 there, 3 here"):
        EncoderFineTuner(**{**FAST, "epochs": 3}).fit(planted, out, resume=True)
    phases = []
    resumed = EncoderFineTuner(**FAST)
    resumed.fit(planted, out, resume=True, progress=lambda phase, done, total: phases.append(phase))
    assert resumed.resumed_from_epoch_ == 1 and set(phases) == {"epoch 2/2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]

    reference = tuned[1]
    a, b = load_file(str(out / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["dev_mse"] for h in resumed.history_] == [h["dev_mse"] for h in tuned[0].history_]
    # resuming a finished run does nothing and gives the same encoder
    again = EncoderFineTuner(**FAST)
    assert again.fit(planted, out, resume=True).name == resumed.encoder_.name and again.resumed_from_epoch_ is None


def test_unobserved_scores_give_no_loss_and_no_gradient():
    import torch

    target = torch.tensor([[0.2, 0.0], [0.0, 0.7]])
    observed = torch.tensor([[True, False], [False, True]])
    pred = torch.tensor([[0.3, 5.0], [-9.0, 0.5]], requires_grad=True)
    loss = observed_mse(pred, target, observed)
    assert loss.item() == pytest.approx((0.1**2 + 0.2**2) / 2)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[1, 0] == 0 and pred.grad[0, 0] != 0
    assert observed_mse(pred, target, torch.zeros_like(observed)).item() == 0.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epochs": 0}, "The 'epochs' parameter of EncoderFineTuner must be an int in \\[1, inf\\). Got 0."),
        ({"lr": -1.0}, "The 'lr' parameter of EncoderFineTuner must be a float in \\(0, inf\\)"),
        ({"dev_fraction": 1.0}, "The 'dev_fraction' parameter of EncoderFineTuner must be a float in \\[0, 1\\)"),
        ({"threads": 0}, "The 'threads' parameter of EncoderFineTuner must be None or an int in \\[1, inf\\)"),
        ({"base": 3}, "The 'base' parameter of EncoderFineTuner must be None or a model name or path"),
    ],
)
def test_bad_parameters_are_refused_by_name(params, message, planted, tmp_path):
    with pytest.raises(ParameterError, match=message):
        EncoderFineTuner(**params).fit(planted, tmp_path / "out")


def test_bad_destinations_and_data_are_refused_before_any_training(planted, tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        EncoderFineTuner().fit(planted, file)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match="holds files that are not a fine-tuned encoder"):
        EncoderFineTuner().fit(planted, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ParameterError, match="expects a RoutingDataset"):
        EncoderFineTuner().fit(planted.prompts, tmp_path / "out")
    scores = np.array([[0.5, 0.2], [np.nan, np.nan]])
    one = RoutingDataset(prompts=["a", "b"], models=["x", "y"], scores=scores, source="tiny.csv")
    with pytest.raises(DataError, match="tiny.csv: fine-tuning needs at least 2 prompts with an observed score"):
        EncoderFineTuner().fit(one, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not checkpoint_dir(tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_fine_tunes_and_fit_uses_the_result(planted, tmp_path):
    from typer.testing import CliRunner

    from finerouter.cli.main import app
    from finerouter.routing.router import FineRouter

    table = tmp_path / "train.csv"
    planted.write(table)
    encoder_dir = tmp_path / "enc"
    runner = CliRunner()
    args = ["finetune-encoder", "--data", str(table), "--out", str(encoder_dir), "--epochs", "1",
            "--max-seq-length", "32", "--batch-size", "16", "--threads", "1", "--lr", "1e-4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "saved" in result.output and (encoder_dir / RECORD_FILE).is_file()
    again = runner.invoke(app, args[:-2] + ["--lr", "2e-4"])  # without --resume, a finished output is replaced
    assert again.exit_code == 0, again.output
    bad = runner.invoke(app, ["finetune-encoder", "--data", str(table), "--out", str(table), "--epochs", "1"])
    assert bad.exit_code == 2 and "is a file" in bad.output

    router_dir = tmp_path / "router"
    fit = runner.invoke(app, ["fit", "--data", str(table), "--encoder", str(encoder_dir), "--out", str(router_dir),
                              "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert fit.exit_code == 0, fit.output
    router = FineRouter.load(router_dir)
    assert router.encoder_.name == SentenceTransformerEncoder(model=encoder_dir).name
    assert router.route(planted.prompts[0]).model in planted.models


@pytest.mark.slow
def test_cli_fit_and_finetune_encoder_take_a_truncation(planted, tmp_path):
    from typer.testing import CliRunner

    from finerouter.cli.main import app
    from finerouter.routing.router import FineRouter

    table = tmp_path / "train.csv"
    planted.write(table)
    runner = CliRunner()
    fit = runner.invoke(app, ["fit", "--data", str(table), "--truncation", "tail", "--out", str(tmp_path / "router"),
                              "--ensemble-size", "1"])  # fmt: skip
    assert fit.exit_code == 0, fit.output
    assert FineRouter.load(tmp_path / "router").encoder_.name.endswith("|msl=256|trunc=tail")
    shared = planted.subset(range(planted.n_prompts))
    shared.prompts = ["Worked examples, then one question. " * 60 + p for p in planted.prompts]
    shared.write(tmp_path / "shared.csv")
    auto = runner.invoke(app, ["fit", "--data", str(tmp_path / "shared.csv"), "--out", str(tmp_path / "r3"),
                               "--ensemble-size", "1"])  # fmt: skip
    assert auto.exit_code == 0, auto.output
    assert "reads the start and the end of long prompts" in auto.output
    assert FineRouter.load(tmp_path / "r3").encoder_.name.endswith("|trunc=head_tail")
    bad = runner.invoke(app, ["fit", "--data", str(table), "--truncation", "middle", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "'truncation' parameter" in bad.output
    tuned = runner.invoke(app, ["finetune-encoder", "--data", str(table), "--out", str(tmp_path / "enc"),
                                "--epochs", "1", "--max-seq-length", "32", "--threads", "1",
                                "--truncation", "head_tail"])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    record = json.loads((tmp_path / "enc" / RECORD_FILE).read_text())
    assert record["settings"]["truncation"] == "head_tail"
