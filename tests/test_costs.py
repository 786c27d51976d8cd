"""CostModel: route-time cost estimates, their saved form, and errors for a malformed saved form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finerouter.data.prices import Prices
from finerouter.errors import ArtifactError
from finerouter.routing.costs import CostModel, observed_costs, token_counter_for


def test_linear_fit_round_trips_through_its_saved_form():
    prompts = ["a" * 10, "b" * 100, "c" * 1000]
    costs = np.array([[1.0, 2.0], [1.9, 11.0], [10.9, 101.0]]) * 1e-6  # cost = a + b * len, per model
    model = CostModel.fit(["m0", "m1"], prompts, costs)
    again = CostModel.from_dict(model.to_dict())
    assert again.kind == "linear" and again.models == ["m0", "m1"]
    np.testing.assert_allclose(again.estimate(prompts), costs, rtol=1e-9, atol=1e-15)


def test_prices_round_trip_through_the_saved_form():
    prices = Prices({"m0": (1.0, 2.0), "m1": (3.0, 4.0)}, output_tokens=10)
    model = CostModel.fit(["m0", "m1"], ["x" * 8], None, prices)
    again = CostModel.from_dict(model.to_dict())
    assert again.kind == "prices"
    np.testing.assert_allclose(again.estimate(["x" * 8]), model.estimate(["x" * 8]))


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "linear"},  # no models
        {"models": ["a", "b"], "linear": [[0.0, 1.0]]},  # one row for two models
        {"models": ["a"], "linear": [["x", 1.0]]},  # not a number
        {"models": ["a"], "prices": {"prices": {"a": "free"}}},  # not a price pair
    ],
)
def test_a_malformed_saved_cost_model_is_an_artifact_error(config):
    with pytest.raises(ArtifactError, match="saved cost model"):
        CostModel.from_dict(config)


# ---------------------------------------------------------------------------------------------- learned lengths
MODELS = ["small", "large", "unpriced"]
PLANTED = np.array([30.0, 400.0])  # mean answer tokens of "small" and "large"


def _planted_costs(prompts, tokens_in, prices, seed=0):
    """Costs billed as the price table says, with each model's answers scattered around its planted mean, and
    the unpriced model billed ``2e-6 + 3e-8 * input tokens``."""
    rng = np.random.default_rng(seed)
    n = len(prompts)
    answers = rng.gamma(4.0, PLANTED / 4.0, size=(n, 2))  # right-skewed lengths, mean PLANTED
    rates = np.array([prices.price(m) for m in MODELS[:2]])
    costs = np.empty((n, 3))
    costs[:, :2] = (tokens_in[:, None] * rates[:, 0] + answers * rates[:, 1]) / 1e6
    costs[:, 2] = 2e-6 + 3e-8 * tokens_in
    return costs, answers


def _prompts(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ["route", "the", "prompt", "to", "a", "model", "cheaply", "def", "f(x):", "return", "x", "+", "1"]
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 80)))) for _ in range(n)]


def test_answer_lengths_are_learned_from_observed_costs_and_prices():
    prices = Prices({"small": (0.5, 1.5), "large": (10.0, 30.0)})
    prompts = _prompts(400)
    tokens_in = prices.input_tokens(prompts).astype(float)
    costs, answers = _planted_costs(prompts, tokens_in, prices)
    model = CostModel.fit(MODELS, prompts, costs, prices)
    assert model.kind == "prices"
    np.testing.assert_allclose(model.output_tokens[:2], answers.mean(axis=0), rtol=0.02)  # winsorised mean
    np.testing.assert_allclose(model.output_tokens[:2], PLANTED, rtol=0.1)
    assert np.isnan(model.output_tokens[2])
    fresh = _prompts(50, seed=1)
    est = model.estimate(fresh)
    expected = prices.estimate_costs(fresh, MODELS[:2], output_tokens=model.output_tokens[:2])
    np.testing.assert_allclose(est[:, :2], expected)
    # the unpriced model gets the linear fit on its observed costs (characters here: no tokenizer)
    true_unpriced = 2e-6 + 3e-8 * prices.input_tokens(fresh)
    np.testing.assert_allclose(est[:, 2], true_unpriced, rtol=0.15)
    default = CostModel.fit(MODELS, prompts, None, prices).estimate(fresh)  # no costs: the fixed 256 tokens
    assert np.isnan(default[:, 2]).all()
    true_large = prices.estimate_costs(fresh, ["large"], output_tokens=[PLANTED[1]])[:, 0]
    assert np.abs(est[:, 1] / true_large - 1).mean() < np.abs(default[:, 1] / true_large - 1).mean() / 3


def test_too_few_observed_costs_keep_the_default_length():
    prices = Prices({"small": (0.5, 1.5), "large": (10.0, 30.0)}, output_tokens=99)
    prompts = _prompts(40)
    costs, _ = _planted_costs(prompts, prices.input_tokens(prompts).astype(float), prices)
    costs[4:, 0] = np.nan  # "small": 4 observations < MIN_ANSWERS
    model = CostModel.fit(MODELS, prompts, costs, prices)
    assert np.isnan(model.output_tokens[0]) and np.isfinite(model.output_tokens[1])
    np.testing.assert_allclose(model.estimate(prompts)[:, 0], prices.estimate_costs(prompts, ["small"])[:, 0])


def test_costs_computed_from_the_price_table_are_not_observations():
    from finerouter.data.dataset import RoutingDataset

    prompts = _prompts(10)
    data = RoutingDataset(prompts, ["a", "b"], np.full((10, 2), 0.5), costs=np.full((10, 2), 1e-6),
                          meta={"cost_source": "prices"})
    assert observed_costs(data) is None
    data.meta["cost_source"] = "data"
    assert observed_costs(data) is data.costs


def test_a_router_fitted_without_prices_learns_costs_the_reader_priced():
    """Costs a reader derived from a price table are the only cost information a router fitted without one has:
    it must still estimate costs from them (cost_weight and budgets need it)."""
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    assert data.costs is not None
    data.meta["cost_source"] = "prices"
    router = FineRouter(encoder=FakeEncoder(), mixing="paper", refine_task_labels=False, **FAST_SETTINGS).fit(data)
    assert router.cost_model_.kind == "linear"
    estimate = router.estimate_costs(data.prompts[:20])
    assert estimate is not None and np.isfinite(estimate).all()
    assert len(router.route(data.prompts[:5], cost_weight=1.0)) == 5


# ---------------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def minilm_counter():
    from finerouter.encoders.sentence_transformer import SentenceTransformerEncoder

    counter = token_counter_for(SentenceTransformerEncoder())
    assert counter is not None and counter.name == "sentence-transformers/all-MiniLM-L6-v2"
    return counter


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from finerouter.encoders.sentence_transformer import packaged_model_path

    return AutoTokenizer.from_pretrained(str(packaged_model_path()), local_files_only=True)


TEXTS = {
    "english": "Which of these animals is a mammal: a shark, a dolphin, or a trout?",
    "code": "def f(x):\n    return {k: v**2 for k, v in x.items() if v % 2 == 0}  # squares",
    "japanese": "東京の天気は明日晴れるでしょうか、それとも雨が降るでしょうか。",
    "long": "tokenization " * 6000,  # longer than COUNT_TOKENS_MAX_CHARS: counted on a prefix, scaled
}


def test_the_encoder_counts_tokens_with_its_own_tokenizer(minilm_counter, minilm_tokenizer):
    counts = dict(zip(TEXTS, minilm_counter(list(TEXTS.values()))))
    for key in ("english", "code", "japanese"):
        assert counts[key] == len(minilm_tokenizer(TEXTS[key], add_special_tokens=False)["input_ids"])
    quarter = {k: len(t) / 4 for k, t in TEXTS.items()}
    assert abs(counts["english"] / quarter["english"] - 1) < 0.3  # English: characters / 4 is about right
    assert counts["code"] > 1.5 * quarter["code"]  # symbols are a token each
    assert counts["japanese"] > 2.5 * quarter["japanese"]  # about a token per character, not per four
    exact_long = len(minilm_tokenizer(TEXTS["long"], add_special_tokens=False)["input_ids"])
    assert abs(counts["long"] / exact_long - 1) < 0.01
    assert minilm_counter([]).shape == (0,)


def test_a_linear_fit_on_tokens_recovers_costs_billed_per_token(minilm_counter):
    prompts = list(TEXTS.values())[:3] * 3 + [t + " " + t for t in list(TEXTS.values())[:3]]
    tokens = minilm_counter(prompts)
    costs = np.stack([1e-5 + 2e-7 * tokens, 5e-6 + 1e-8 * tokens], axis=1)  # billed per token
    on_tokens = CostModel.fit(["a", "b"], prompts, costs, token_counter=minilm_counter)
    on_chars = CostModel.fit(["a", "b"], prompts, costs)
    assert on_tokens.input_unit == "tokens" and on_chars.input_unit == "characters"
    np.testing.assert_allclose(on_tokens.estimate(prompts), costs, rtol=1e-6)
    assert np.abs(on_chars.estimate(prompts) / costs - 1).max() > 0.1  # Japanese and code break characters


def test_a_tokenizer_cost_model_round_trips_and_older_saved_forms_still_load(minilm_counter, caplog):
    prices = Prices({"small": (0.5, 1.5), "large": (10.0, 30.0)})
    prompts = _prompts(60) + list(TEXTS.values())[:3]
    costs, _ = _planted_costs(prompts, minilm_counter(prompts), prices)
    model = CostModel.fit(MODELS, prompts, costs, prices, token_counter=minilm_counter)
    saved = json.loads(json.dumps(model.to_dict()))
    assert saved["tokenizer"] == minilm_counter.name and saved["input_unit"] == "tokens"
    again = CostModel.from_dict(saved, minilm_counter)
    np.testing.assert_allclose(again.estimate(prompts), model.estimate(prompts))
    np.testing.assert_allclose(again.output_tokens, model.output_tokens)
    with caplog.at_level("WARNING", logger="finerouter.routing.costs"):
        blind = CostModel.from_dict(saved)  # no tokenizer at load: characters / 4, and a warning
    assert "no tokenizer" in caplog.text
    assert np.isfinite(blind.estimate(prompts)).all()
    # the forms saved before tokenizers and learned lengths: characters, the table's default length
    old_linear = {"kind": "linear", "models": ["a", "b"], "linear": [[1e-6, 2e-9], [None, None]]}
    est = CostModel.from_dict(old_linear, minilm_counter).estimate(["x" * 100])
    np.testing.assert_allclose(est[0, 0], 1e-6 + 2e-9 * 100)
    assert np.isnan(est[0, 1])
    old_prices = {"kind": "prices", "models": ["small", "large"], "prices": prices.to_dict()}
    est = CostModel.from_dict(old_prices, minilm_counter).estimate(["x" * 100])
    np.testing.assert_allclose(est, prices.estimate_costs(["x" * 100], ["small", "large"]))


def test_a_fitted_router_counts_tokens_with_its_encoder_and_keeps_them_after_loading(tmp_path, minilm_counter):
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    class CountingFakeEncoder(FakeEncoder):
        def count_tokens(self, texts):
            return minilm_counter.count(texts)

    data = make_synthetic_routing_data(n_prompts=120, n_models=4, seed=0)
    router = FineRouter(encoder=CountingFakeEncoder(), seed=0, **FAST_SETTINGS).fit(data)
    assert router.cost_model_.input_unit == "tokens" and router.cost_model_.token_counter is not None
    prompts = ["一二三四五六七八九十" * 5, "short question?"]
    before = router.estimate_costs(prompts)
    loaded = FineRouter.load(router.save(tmp_path / "r"), encoder=CountingFakeEncoder())
    assert loaded.cost_model_.tokenizer == "fake-hashed-bow-64"
    np.testing.assert_allclose(loaded.estimate_costs(prompts), before)


def test_costs_that_are_the_tables_own_estimates_leave_the_estimates_bit_identical():
    prices = Prices({"small": (0.5, 1.5), "large": (10.0, 30.0)})
    prompts = _prompts(30)
    costs = prices.estimate_costs(prompts, MODELS[:2])  # how a reader fills costs from prices
    model = CostModel.fit(MODELS[:2], prompts, costs, prices)
    assert model.output_tokens is None
    fresh = _prompts(10, seed=3)
    assert np.array_equal(model.estimate(fresh), prices.estimate_costs(fresh, MODELS[:2]))


# ---------------------------------------------------------------------------------------------- grouped residuals
def _two_kinds(n: int = 400, seed: int = 0):
    """Prompts of two kinds, alike in length: the first kind's answers cost 4e-6 more on model "a" (code answers
    are long); model "b" costs the same for both. Embeddings separate the kinds."""
    from finerouter.routing.costs import GROUP_SHRINK

    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    lengths = rng.integers(50, 500, n)
    prompts = ["x" * int(k) for k in lengths]
    centres = np.eye(8)[:2]
    emb = centres[kind] + 0.05 * rng.normal(size=(n, 8))
    base = 1e-6 + 1e-8 * lengths
    costs = np.stack([base + np.where(kind == 0, 4e-6, 0.0), base], axis=1)
    costs += rng.normal(0, 1e-8, costs.shape)
    return prompts, costs, emb, kind, GROUP_SHRINK


def test_grouped_residuals_correct_what_the_prompt_length_cannot_see():
    prompts, costs, emb, kind, shrink = _two_kinds()
    plain = CostModel.fit(["a", "b"], prompts, costs)
    grouped = CostModel.fit(["a", "b"], prompts, costs, embeddings=emb)
    assert plain.groups is None and grouped.groups is not None and grouped.groups.centres.shape[1] == 8
    err_plain = np.abs(plain.estimate(prompts) - costs)[:, 0].mean()
    err_grouped = np.abs(grouped.estimate(prompts, emb) - costs)[:, 0].mean()
    # the length fit splits the difference between the kinds; 8 groups of about 50 prompts recover 5/7 of it
    assert err_grouped < 0.4 * err_plain
    # without embeddings (or on a model the groups never saw) the estimates are the plain fit's
    np.testing.assert_array_equal(grouped.estimate(prompts), plain.estimate(prompts))
    np.testing.assert_allclose(grouped.estimate(prompts, emb)[:, 1], plain.estimate(prompts)[:, 1], atol=2e-8)
    added = CostModel(["a", "b", "new"], linear=np.vstack([grouped.linear, [1e-6, 0.0]]), groups=grouped.groups)
    np.testing.assert_array_equal(added.estimate(prompts, emb)[:, 2], np.full(len(prompts), 1e-6))
    # each group's correction is its mean residual shrunk by n / (n + GROUP_SHRINK)
    rows = grouped.groups.correction(emb, ["a", "b"])
    residual = costs[:, 0] - plain.estimate(prompts)[:, 0]
    group = np.argmax(emb / np.linalg.norm(emb, axis=1, keepdims=True) @ grouped.groups.centres.T, axis=1)
    for g in np.unique(group):
        n = (group == g).sum()
        assert rows[group == g, 0][0] == pytest.approx(residual[group == g].mean() * n / (n + shrink), rel=1e-6)


def test_grouped_residuals_round_trip_and_need_enough_costed_prompts():
    prompts, costs, emb, _, _ = _two_kinds()
    grouped = CostModel.fit(["a", "b"], prompts, costs, embeddings=emb)
    again = CostModel.from_dict(json.loads(json.dumps(grouped.to_dict())))
    np.testing.assert_allclose(again.estimate(prompts, emb), grouped.estimate(prompts, emb), rtol=1e-9, atol=1e-15)
    few = CostModel.fit(["a", "b"], prompts[:90], costs[:90], embeddings=emb[:90])  # under two groups' worth
    assert few.groups is None
    no_costs = CostModel.fit(["a", "b"], prompts, None, embeddings=emb)
    assert no_costs.kind == "none" and no_costs.groups is None
    exact = CostModel.fit(["a", "b"], prompts, grouped.estimate(prompts), embeddings=emb)  # nothing left to learn
    assert exact.groups is None
    bad = grouped.to_dict()
    bad["groups"]["residuals"] = bad["groups"]["residuals"][:1]
    with pytest.raises(ArtifactError, match="cost groups"):
        CostModel.from_dict(bad)


def test_a_router_routes_with_its_grouped_cost_estimates_and_keeps_them_when_saved(tmp_path):
    from finerouter.data.synthetic import make_synthetic_routing_data
    from finerouter.routing.router import FineRouter
    from finerouter.testing import FAST_SETTINGS, FakeEncoder

    data = make_synthetic_routing_data(n_prompts=240, n_models=3, seed=1)
    data.costs[:, 0] += np.where(np.asarray(data.tasks) == "programming", 2e-3, 0.0)  # code answers are long
    router = FineRouter(encoder=FakeEncoder(), mixing="paper", refine_task_labels=False, **FAST_SETTINGS).fit(data)
    assert router.cost_model_.groups is not None
    prompts = data.prompts[:12]
    emb = router.encoder_.encode(prompts)
    expected = router.cost_model_.estimate(prompts, emb)
    np.testing.assert_allclose(router.estimate_costs(prompts), expected)
    decisions = router.route(prompts, cost_weight=1.0)
    for i, d in enumerate(decisions):
        np.testing.assert_allclose(d.costs, expected[i])
    router.save(tmp_path / "r")
    loaded = FineRouter.load(tmp_path / "r")
    np.testing.assert_allclose(loaded.estimate_costs(prompts), expected)
