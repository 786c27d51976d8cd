"""Prices: reading and validating the prices CSV, and the per-prompt cost estimate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from finerouter.data.prices import Prices
from finerouter.errors import DataError, ParameterError


def _write(tmp_path, text: str, name: str = "prices.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small_prices(tmp_path):
    return _write(
        tmp_path,
        "model,input_usd_per_mtok,output_usd_per_mtok\ncheap,0.1,0.2\nbig,3,15\n",
    )


def test_read_and_estimate_follows_documented_rule(small_prices):
    prices = Prices.read(small_prices)
    assert prices.models == ["cheap", "big"]
    assert prices.price("big") == (3.0, 15.0)
    assert "cheap" in prices and "other" not in prices
    prompts = ["x" * 10, "y" * 4, "z"]  # ceil(10/4)=3, ceil(4/4)=1, ceil(1/4)=1 input tokens
    np.testing.assert_array_equal(prices.input_tokens(prompts), [3, 1, 1])
    costs = prices.estimate_costs(prompts, ["big", "cheap", "unknown"])
    assert costs.shape == (3, 3) and costs.dtype == np.float64
    assert costs[0, 0] == pytest.approx((3 * 3.0 + 256 * 15.0) / 1e6)
    assert costs[1, 1] == pytest.approx((1 * 0.1 + 256 * 0.2) / 1e6)
    assert np.isnan(costs[:, 2]).all()  # no price -> unknown, never 0


def test_price_of_an_unpriced_model_is_a_data_error_naming_the_file_and_model(small_prices):
    prices = Prices.read(small_prices)
    with pytest.raises(DataError, match=r"prices\.csv: no price for model 'unknown'.*\['big', 'cheap'\]"):
        prices.price("unknown")


def test_output_tokens_and_chars_per_token_change_the_estimate(small_prices):
    base = Prices.read(small_prices).estimate_costs(["a" * 40], ["big"])[0, 0]
    no_output = Prices.read(small_prices, output_tokens=0).estimate_costs(["a" * 40], ["big"])[0, 0]
    assert no_output == pytest.approx(10 * 3.0 / 1e6)
    assert base - no_output == pytest.approx(256 * 15.0 / 1e6)
    denser = Prices.read(small_prices, output_tokens=0, chars_per_token=2.0)
    assert denser.estimate_costs(["a" * 40], ["big"])[0, 0] == pytest.approx(20 * 3.0 / 1e6)


def test_longer_prompts_cost_more_and_unicode_counts_code_points(small_prices):
    prices = Prices.read(small_prices, output_tokens=0)
    costs = prices.estimate_costs(["short", "a much longer prompt " * 20], ["cheap"])
    assert costs[1, 0] > costs[0, 0]
    assert prices.input_tokens(["é" * 8])[0] == 2  # 8 code points, not 16 UTF-8 bytes
    assert prices.estimate_costs([], ["cheap", "big"]).shape == (0, 2)


def test_shared_prices_file(prices_csv):
    prices = Prices.read(prices_csv)
    assert len(prices) == 9
    assert prices.price("qwen2.5-7b-instruct") == (0.2, 0.2)
    assert prices.price("llama3-chatqa-1.5-70b") == (0.9, 0.9)


def test_dict_round_trip_is_json_ready(small_prices):
    prices = Prices.read(small_prices, output_tokens=100)
    data = json.loads(json.dumps(prices.to_dict()))
    back = Prices.from_dict(data)
    assert back.models == prices.models and back.output_tokens == 100
    prompts = ["hello world", "?"]
    np.testing.assert_allclose(back.estimate_costs(prompts, ["big", "cheap"]), prices.estimate_costs(prompts, ["big", "cheap"]))


def test_extra_columns_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(
        "\ufeffmodel, input_usd_per_mtok ,output_usd_per_mtok,size\na,1,2,7B\nb,0,0,1B\n".encode("utf-8")
    )
    prices = Prices.read(path)
    assert prices.models == ["a", "b"] and prices.price("b") == (0.0, 0.0)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("model,input_usd_per_mtok\na,1\n", ["missing column", "output_usd_per_mtok"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\na,1,2\nb,-1,2\n",
         ["'input_usd_per_mtok'", "row 1", "'b'", "negative"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\na,1,cheap\n",
         ["'output_usd_per_mtok'", "row 0", "'cheap'", "not a number"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\na,,2\n", ["'input_usd_per_mtok'", "row 0", "missing price"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\na,nan,2\n", ["not a finite number"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\na,1,2\na,1,2\n", ["row 1", "listed twice", "row 0"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\n,1,2\n", ["'model'", "row 0", "empty model name"]),
        ("model,input_usd_per_mtok,output_usd_per_mtok\n", ["no rows"]),
    ],
)
def test_invalid_prices_files_name_file_column_row(tmp_path, text, needles):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        Prices.read(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_missing_file_and_bad_parameters(tmp_path, small_prices):
    with pytest.raises(DataError, match="not found"):
        Prices.read(tmp_path / "nope.csv")
    with pytest.raises(ParameterError, match="The 'output_tokens' parameter of Prices must be an int in \\[0, inf\\)"):
        Prices.read(small_prices, output_tokens=-1)
    with pytest.raises(ParameterError, match="chars_per_token"):
        Prices({"a": (1.0, 1.0)}, chars_per_token=0)
    with pytest.raises(DataError, match="negative"):
        Prices({"a": (1.0, -2.0)})
    with pytest.raises(DataError, match="no models"):
        Prices({})
    assert math.isnan(Prices({"a": (1.0, 1.0)}).estimate_costs(["p"], ["b"])[0, 0])


def test_given_token_counts_and_per_model_answer_lengths_replace_the_defaults(small_prices):
    prices = Prices.read(small_prices)
    prompts = ["x" * 10, "y" * 4]
    costs = prices.estimate_costs(prompts, ["big", "cheap"], input_tokens=[7, 2], output_tokens=[100.0, np.nan])
    assert costs[0, 0] == pytest.approx((7 * 3.0 + 100 * 15.0) / 1e6)
    assert costs[1, 1] == pytest.approx((2 * 0.1 + 256 * 0.2) / 1e6)  # NaN answer length: the table's default
    with pytest.raises(DataError, match="input_tokens must be 2 finite counts"):
        prices.estimate_costs(prompts, ["big"], input_tokens=[1, 2, 3])
    with pytest.raises(DataError, match="output_tokens must be 1 counts"):
        prices.estimate_costs(prompts, ["big"], output_tokens=[-5.0])


def test_answer_tokens_inverts_the_cost_rule():
    prices = Prices({"cheap": (0.1, 0.2), "big": (3.0, 15.0), "free": (1.0, 0.0)})
    models = ["big", "cheap", "free", "unpriced"]
    tokens_in = np.array([12.0, 300.0, 1.0])
    answers = np.array([40.0, 0.0, 900.0])  # per prompt
    in_rates, out_rates = np.array([3.0, 0.1, 1.0, np.nan]), np.array([15.0, 0.2, 0.0, np.nan])
    costs = (tokens_in[:, None] * in_rates + answers[:, None] * out_rates) / 1e6
    implied = prices.answer_tokens(tokens_in, models, costs)
    np.testing.assert_allclose(implied[:, :2], np.stack([answers, answers], axis=1), atol=1e-6)
    assert np.isnan(implied[:, 2:]).all()  # a free output or no price: nothing to learn
    per_model = prices.estimate_costs(["p"] * 3, models[:2], input_tokens=tokens_in, output_tokens=[70.0, 5.0])
    np.testing.assert_allclose(prices.answer_tokens(tokens_in, models[:2], per_model), [[70.0, 5.0]] * 3)
    with pytest.raises(DataError, match=r"costs have shape \(3, 2\); expected \(3, 4\)"):
        prices.answer_tokens(tokens_in, models, costs[:, :2])
