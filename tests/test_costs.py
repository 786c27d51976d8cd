"""CostModel: route-time cost estimates, their saved form, and errors for a malformed saved form."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.data.prices import Prices
from finerouter.errors import ArtifactError
from finerouter.routing.costs import CostModel


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
