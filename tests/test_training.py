"""The shared training helpers: hyper-parameter checks and get_params read from the constructor."""

from __future__ import annotations

import inspect

import pytest

from finerouter._training import GetParamsMixin, check_device_name, check_training_params
from finerouter.baselines.ipr import IPRRouter
from finerouter.baselines.mlp_classifier import MLPClassifierRouter
from finerouter.baselines.mlp_regressor import MLPRegressorRouter
from finerouter.classify.bilinear import TaskClassifier
from finerouter.errors import ParameterError
from finerouter.quality.estimator import QualityEstimator

GOOD = {"lr": 1e-3, "batch_size": 8, "weight_decay": 0.0, "patience": 1, "dev_fraction": 0.0, "seed": 0}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"lr": 0.0}, "The 'lr' parameter of Owner must be a float in (0, inf). Got 0.0."),
        ({"batch_size": 0}, "The 'batch_size' parameter of Owner must be an int in [1, inf). Got 0."),
        ({"weight_decay": -1e-4}, "The 'weight_decay' parameter of Owner must be a float in [0, inf). Got -0.0001."),
        ({"patience": 0}, "The 'patience' parameter of Owner must be an int in [1, inf). Got 0."),
        ({"dev_fraction": 1.0}, "The 'dev_fraction' parameter of Owner must be a float in [0, 1). Got 1.0."),
        ({"seed": -1}, "The 'seed' parameter of Owner must be an int in [0, inf). Got -1."),
        # two bad values: the first in the documented order is reported
        ({"seed": -1, "lr": 0.0}, "The 'lr' parameter of Owner must be a float in (0, inf). Got 0.0."),
    ],
)
def test_check_training_params_messages(bad, message):
    check_training_params("Owner", **GOOD, dev_closed="left")
    with pytest.raises(ParameterError) as info:
        check_training_params("Owner", **{**GOOD, **bad}, dev_closed="left")
    assert str(info.value) == message


def test_dev_fraction_rule_is_each_components_own():
    """The classifier and the estimator can train without a dev set; the torch baselines need one."""
    check_training_params("Owner", **GOOD, dev_closed="left")
    with pytest.raises(ParameterError, match=r"must be a float in \(0, 1\)\. Got 0\.0\."):
        check_training_params("Owner", **GOOD, dev_closed="neither")
    TaskClassifier(dev_fraction=0.0)._validate_params()
    QualityEstimator(dev_fraction=0.0)._validate_params()
    with pytest.raises(ParameterError, match=r"'dev_fraction' parameter of IPRRouter must be a float in \(0, 1\)"):
        IPRRouter(dev_fraction=0.0)._validate()


@pytest.mark.parametrize("device", [None, 0, b"cpu"])
def test_device_must_be_a_str(device):
    check_device_name("cuda:1", "Owner")  # availability is checked at fit, not here
    with pytest.raises(ParameterError) as info:
        check_device_name(device, "Owner")
    assert str(info.value) == f"The 'device' parameter of Owner must be a str such as 'cpu'. Got {device!r}."


@pytest.mark.parametrize("cls", [TaskClassifier, QualityEstimator])
def test_get_params_lists_every_constructor_parameter_in_order(cls):
    names = [n for n in inspect.signature(cls).parameters]
    assert list(cls().get_params()) == names
    changed = {"seed": 7, "lr": 0.5, "device": "cuda"}
    params = cls(**changed).get_params()
    assert {k: params[k] for k in changed} == changed
    assert cls(**params).get_params() == params  # the saved config rebuilds the same component


def test_get_params_follows_a_subclass_signature():
    class Small(GetParamsMixin):
        def __init__(self, a: int = 1, *, b: str = "x") -> None:
            self.a = a
            self.b = b

    class Smaller(Small):
        def __init__(self, a: int = 2) -> None:
            super().__init__(a, b="y")

    assert Small(3, b="z").get_params() == {"a": 3, "b": "z"}
    assert Smaller().get_params() == {"a": 2}


@pytest.mark.parametrize("cls", [MLPClassifierRouter, MLPRegressorRouter])
def test_mlp_routers_share_one_constructor(cls):
    assert list(inspect.signature(cls).parameters) == [
        "hidden", "dropout", "epochs", "lr", "batch_size", "weight_decay", "patience", "dev_fraction", "seed",
    ]  # fmt: skip
    router = cls(hidden=8, dropout=0.25, epochs=3, seed=4)
    assert (router.hidden, router.dropout, router.epochs, router.seed) == (8, 0.25, 3, 4)
    module = router._build(5, 3)
    assert [type(layer).__name__ for layer in module] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert (module[0].in_features, module[0].out_features, module[2].p, module[3].out_features) == (5, 8, 0.25, 3)
