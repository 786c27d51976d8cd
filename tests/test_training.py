"""The shared training helpers: hyper-parameter checks, the trained components' parameters, early stopping."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from finerouter._training import EarlyStopping, check_training_params, resolved_seed
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


@pytest.mark.parametrize("cls", [TaskClassifier, QualityEstimator])
@pytest.mark.parametrize("device", [None, 0, b"cpu"])
def test_device_must_be_a_str(cls, device):
    cls(device="cuda:1")._validate_params()  # availability is checked at fit, not here
    with pytest.raises(ParameterError) as info:
        cls(device=device)._validate_params()
    assert str(info.value) == f"The 'device' parameter of {cls.__name__} must be a str such as 'cpu'. Got {device!r}."


@pytest.mark.parametrize("cls", [TaskClassifier, QualityEstimator])
def test_every_declared_constraint_is_enforced_with_the_parameter_named(cls):
    assert set(cls._parameter_constraints) == set(inspect.signature(cls).parameters)
    for name, constraints in cls._parameter_constraints.items():
        bad = constraints[0].invalid_example()
        with pytest.raises(ParameterError, match=rf"^The '{name}' parameter of {cls.__name__} must be .* Got "):
            cls(**{name: bad})._validate_params()


@pytest.mark.parametrize("cls", [TaskClassifier, QualityEstimator])
def test_seed_defaults_to_none_meaning_zero(cls):
    assert cls().seed is None
    cls(seed=None)._validate_params()
    assert resolved_seed(None) == 0 and resolved_seed(7) == 7
    with pytest.raises(ParameterError) as info:
        cls(seed=-1)._validate_params()
    assert str(info.value) == f"The 'seed' parameter of {cls.__name__} must be an int in [0, inf) or None. Got -1."


def test_error_message_of_an_int_given_for_a_float_range():
    with pytest.raises(ParameterError) as info:
        QualityEstimator(lr=0)._validate_params()
    assert str(info.value) == "The 'lr' parameter of QualityEstimator must be a float in (0, inf). Got 0."


@pytest.mark.parametrize("cls", [TaskClassifier, QualityEstimator])
def test_set_params_and_clone(cls):
    component = cls(lr=0.5)
    assert component.set_params(batch_size=7, seed=3) is component
    assert (component.lr, component.batch_size, component.seed) == (0.5, 7, 3)
    twin = component.clone(patience=9)
    assert twin is not component and twin.get_params() == {**component.get_params(), "patience": 9}
    with pytest.raises(ParameterError, match="Invalid parameter 'epoch_s'"):
        component.set_params(epoch_s=3)


@pytest.mark.parametrize("cls", [TaskClassifier, QualityEstimator])
def test_get_params_lists_every_constructor_parameter_in_order(cls):
    names = [n for n in inspect.signature(cls).parameters]
    assert list(cls().get_params()) == names
    changed = {"seed": 7, "lr": 0.5, "device": "cuda"}
    params = cls(**changed).get_params()
    assert {k: params[k] for k in changed} == changed
    assert cls(**params).get_params() == params  # the saved config rebuilds the same component


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


# ----------------------------------------------------------------------------------------------- EarlyStopping


def run_stopper(stopper: EarlyStopping, values: list) -> int:
    """Feed ``values`` as epochs 1, 2...; the state of epoch e is the string "e"; returns the last epoch run."""
    epoch = 0
    for epoch, value in enumerate(values, start=1):
        if stopper.update(epoch, value, lambda e=epoch: f"state {e}"):
            break
    return epoch


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best():
    stopper = EarlyStopping(patience=2, monitor="dev_loss")
    stopper.start(1.0, lambda: "state 0")
    last = run_stopper(stopper, [0.9, 0.7, 0.8, 0.75, 0.1])
    assert last == 4  # epochs 3 and 4 did not beat 0.7: stop before ever seeing 0.1
    assert (stopper.best_epoch, stopper.best_value, stopper.best_state) == (2, 0.7, "state 2")
    restored = []
    stopper.restore(restored.append)
    assert restored == ["state 2"]
    assert stopper.epochs_without_improvement == 2 and stopper.improved is False


def test_early_stopping_keeps_the_start_when_nothing_improves():
    stopper = EarlyStopping(patience=3)
    stopper.start(0.5, lambda: "initial")
    assert run_stopper(stopper, [0.6, 0.5, math.nan, 0.1]) == 3  # equal and NaN values never improve
    assert (stopper.best_epoch, stopper.best_state) == (0, "initial")


def test_early_stopping_min_delta_and_max_mode():
    stopper = EarlyStopping(patience=2, min_delta=0.1)
    stopper.start(1.0)
    assert run_stopper(stopper, [0.95, 0.91, 0.5]) == 2  # improvements within min_delta do not count
    assert stopper.best_epoch == 0
    higher = EarlyStopping(patience=1, mode="max", monitor="dev_quality")
    assert run_stopper(higher, [0.2, 0.4, 0.3, 0.9]) == 3
    assert (higher.best_epoch, higher.best_value, higher.best_state) == (2, 0.4, "state 2")


def test_early_stopping_without_a_monitored_value_keeps_the_last_epoch():
    stopper = EarlyStopping(patience=1)
    stopper.start(None, lambda: "initial")
    assert run_stopper(stopper, [None] * 5) == 5  # nothing to monitor: never stops early
    assert (stopper.best_epoch, stopper.best_state) == (5, "state 5")
    # an unevaluated start: the first comparable value improves on it
    stopper = EarlyStopping(patience=1)
    stopper.start(None, lambda: "initial")
    assert run_stopper(stopper, [3.0, 4.0]) == 2 and stopper.best_state == "state 1"


def test_early_stopping_without_restore_best_keeps_no_state():
    stopper = EarlyStopping(patience=2, restore_best=False)
    calls = []
    stopper.start(1.0, lambda: calls.append(0))
    stopper.update(1, 0.5, lambda: calls.append(1))
    assert calls == [] and stopper.best_state is None and stopper.best_epoch == 1
    stopper.restore(calls.append)
    assert calls == []


def test_early_stopping_per_group_values():
    """One value per group (e.g. per task): groups improve independently; patience counts epochs where none did."""
    stopper = EarlyStopping(patience=2, restore_best=False)
    stopper.start(np.array([1.0, 1.0, np.inf]))
    assert not stopper.update(1, np.array([0.5, 1.2, np.inf]))
    assert stopper.improved.tolist() == [True, False, False]
    assert not stopper.update(2, np.array([0.6, 0.9, np.inf]))  # group 1 improved: the count restarts
    assert not stopper.update(3, np.array([0.6, 0.95, np.inf]))
    assert stopper.update(4, np.array([0.5, 0.9, np.inf]))  # equal is not better: second epoch without gain
    assert stopper.best_value.tolist() == [0.5, 0.9, np.inf]
    assert stopper.best_epoch.tolist() == [1, 2, 0]  # 0: a group that never improved on its start


@pytest.mark.parametrize("seed", range(20))
def test_early_stopping_invariants_on_random_sequences(seed):
    rng = np.random.default_rng(seed)
    patience = int(rng.integers(1, 5))
    values = rng.random(int(rng.integers(1, 30))).round(1).tolist()  # rounding makes ties
    stopper = EarlyStopping(patience=patience)
    last = run_stopper(stopper, values)
    seen = values[:last]
    best_epoch = int(np.argmin(seen)) + 1  # the first epoch reaching the minimum
    assert (stopper.best_epoch, stopper.best_value) == (best_epoch, min(seen))
    assert stopper.best_state == f"state {best_epoch}"
    # it stops exactly when `patience` epochs in a row did not beat the best, or at the end
    assert last == len(values) or last - best_epoch == patience
    assert last - best_epoch <= patience


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience": 0}, "The 'patience' parameter of EarlyStopping must be an int in [1, inf). Got 0."),
        ({"patience": 2, "mode": "lowest"}, "The 'mode' parameter of EarlyStopping must be one of {'min', 'max'}."),
        ({"patience": 2, "min_delta": -1.0}, "The 'min_delta' parameter of EarlyStopping must be a float in [0, inf)."),
    ],
)
def test_early_stopping_rejects_bad_settings(kwargs, message):
    with pytest.raises(ParameterError) as info:
        EarlyStopping(**kwargs)
    assert str(info.value).startswith(message)
