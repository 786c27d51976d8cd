"""The one contract every component shares (finerouter.base.Component), checked over all of them: parameters,
declarative constraints fed invalid values, nested set_params, clones, save/load, and FineRouter's components."""

from __future__ import annotations

import numpy as np
import pytest

from finerouter.base import Component
from finerouter.classify import TaskClassifier
from finerouter.describe.base import PromptDescriber
from finerouter.describe.openai_compatible import OpenAIDescriber
from finerouter.discovery import TaskDiscovery
from finerouter.engines import LocalEngine, RayEngine
from finerouter.encoders.finetune import EncoderFineTuner
from finerouter.encoders.sentence_transformer import SentenceTransformerEncoder
from finerouter.errors import ParameterError
from finerouter.quality import QualityEstimator
from finerouter.routing.router import FineRouter
from finerouter.testing import FAST_SETTINGS, FakeEncoder

#: Each component with the arguments it needs to be built (besides its defaults).
COMPONENTS: list[tuple[type, dict]] = [
    (TaskDiscovery, {}),
    (TaskClassifier, {}),
    (QualityEstimator, {}),
    (SentenceTransformerEncoder, {}),
    (EncoderFineTuner, {}),
    (PromptDescriber, {}),
    (OpenAIDescriber, {"base_url": "http://127.0.0.1:9/v1", "model": "m"}),
    (FineRouter, {}),
    (LocalEngine, {}),
    (RayEngine, {}),
]
#: Constructor parameters that take any object (checked where they are used), per component.
UNCONSTRAINED = {OpenAIDescriber: {"transport"}, FineRouter: {"prices"}}
#: Components that check their parameters when built (encoders, describers are used, not fitted).
EAGER = {SentenceTransformerEncoder, PromptDescriber, OpenAIDescriber}


def _ids(cases):
    return [cls.__name__ for cls, _ in cases]


def _invalid_cases():
    for cls, args in COMPONENTS:
        for name, constraints in cls._parameter_constraints.items():
            examples = [c.invalid_example() for c in constraints]
            bad = [v for v in examples if v is not NotImplemented and not any(c.is_satisfied_by(v) for c in constraints)]
            assert bad, f"no invalid example for {cls.__name__}.{name}"
            yield pytest.param(cls, args, name, bad[0], id=f"{cls.__name__}.{name}")


@pytest.mark.parametrize(("cls", "args"), COMPONENTS, ids=_ids(COMPONENTS))
def test_every_constructor_parameter_is_declared_and_round_trips(cls, args):
    component = cls(**args)
    assert isinstance(component, Component)
    params = component.get_params(deep=False)
    assert set(params) - UNCONSTRAINED.get(cls, set()) == set(cls._parameter_constraints)
    clone = component.clone()
    assert clone is not component and type(clone) is cls
    assert clone.get_params(deep=False).keys() == params.keys()
    component._validate_params()  # the defaults are valid


@pytest.mark.parametrize(("cls", "args", "name", "value"), list(_invalid_cases()))
def test_invalid_values_are_refused_with_the_parameter_named(cls, args, name, value):
    pattern = rf"The '{name}' parameter of {cls.__name__} must be"
    with pytest.raises(ParameterError, match=pattern):
        component = cls(**{**args, name: value})
        assert cls not in EAGER, "an eagerly checked component accepted an invalid value"
        component._validate_params()


@pytest.mark.parametrize(("cls", "args"), COMPONENTS, ids=_ids(COMPONENTS))
def test_unknown_parameters_are_refused(cls, args):
    with pytest.raises(ParameterError, match=rf"Invalid parameter 'no_such_thing' for {cls.__name__}"):
        cls(**args).set_params(no_such_thing=1)


def test_nested_parameters_reach_components_given_as_dicts_or_instances():
    router = FineRouter(classifier={"epochs": 3})
    router.set_params(classifier__threshold=0.25, quality__epochs_general=2)
    assert isinstance(router.classifier, TaskClassifier)
    assert router.classifier.threshold == 0.25 and router.classifier.epochs == 3
    assert router.get_params()["quality__epochs_general"] == 2
    with pytest.raises(ParameterError, match="Invalid parameter 'epoch' for TaskClassifier"):
        FineRouter(classifier={"epoch": 3})._validate_params()  # a misspelt shorthand key
    with pytest.raises(ParameterError, match="Invalid parameter 'epoch' for TaskClassifier"):
        FineRouter().set_params(classifier__epoch=3)
    with pytest.raises(ParameterError, match="'quality' parameter of FineRouter must be a QualityEstimator"):
        FineRouter(quality=TaskClassifier()).make_component("quality")


def test_the_routers_seed_fills_only_seeds_left_unset():
    router = FineRouter(seed=7, discovery=TaskDiscovery(k=6), quality=QualityEstimator(seed=1), classifier={"seed": 2})
    assert router.make_component("discovery").seed == 7 and router.make_component("discovery").k == 6
    assert router.make_component("quality").seed == 1  # the user's seed, never overridden
    assert router.make_component("classifier").seed == 2
    # the router's default classifier threshold applies to None and dict shorthands, not to an instance
    assert FineRouter().make_component("classifier").threshold == 0.0
    assert FineRouter(classifier=TaskClassifier()).make_component("classifier").threshold == 0.5
    # make_component clones: the instance the user passed is never fitted in place
    given = TaskDiscovery()
    assert FineRouter(discovery=given).make_component("discovery") is not given


def test_instances_and_dicts_give_the_same_router(tmp_path):
    from finerouter.data.synthetic import make_synthetic_routing_data

    data = make_synthetic_routing_data(n_prompts=150, n_models=4, seed=1)
    as_dicts = FineRouter(encoder=FakeEncoder(), seed=3, mixing="paper", refine_task_labels=False, **FAST_SETTINGS)
    as_instances = FineRouter(
        encoder=FakeEncoder(), seed=3, mixing="paper", refine_task_labels=False,
        classifier=TaskClassifier(threshold=0.0, epochs=5),
        quality=QualityEstimator(epochs_general=3, epochs_task=2), ensemble_size=1,
    )
    a, b = as_dicts.fit(data), as_instances.fit(data)
    prompts = data.prompts[:40]
    assert [d.model for d in a.route(prompts)] == [d.model for d in b.route(prompts)]
    # a custom encoder with config()/from_config() is saved with the router and rebuilt at load
    path = a.save(tmp_path / "router")
    loaded = FineRouter.load(path)
    assert isinstance(loaded.encoder_, FakeEncoder) and loaded.encoder_.dim == a.encoder_.dim
    assert [d.model for d in loaded.route(prompts)] == [d.model for d in a.route(prompts)]
    assert loaded.get_params(deep=False)["quality"]["epochs_general"] == 3  # the built components' parameters
    # load's defaults are the constructor's: a parameter the manifest lacks takes the constructor default
    assert FineRouter.load(path).cv_folds == FineRouter().cv_folds


def test_fitted_components_save_and_load_themselves(tmp_path, rng):
    from finerouter.data.synthetic import make_synthetic_routing_data

    data = make_synthetic_routing_data(n_prompts=160, n_models=4, seed=2)
    emb = FakeEncoder(dim=32).encode(data.prompts)
    discovery = TaskDiscovery(seed=0).fit(emb, data.scores, model_names=data.models, prompts=data.prompts)
    loaded = TaskDiscovery.load(discovery.save(tmp_path / "discovery"))
    assert np.array_equal(loaded.labels_, discovery.labels_) and loaded.get_params() == discovery.get_params()
    assert loaded.catalog_.n_tasks == discovery.catalog_.n_tasks
    n_tasks = discovery.catalog_.n_tasks
    if n_tasks:
        task_emb = FakeEncoder(dim=32).encode([t.description for t in discovery.catalog_.tasks])
        classifier = TaskClassifier(epochs=3, seed=0).fit(emb, discovery.labels_, task_emb)
        again = TaskClassifier.load(classifier.save(tmp_path / "classifier"))
        assert np.array_equal(again.predict(emb)[0], classifier.predict(emb)[0])
    tasks = np.full(len(emb), -1)
    quality = QualityEstimator(epochs_general=2, epochs_task=1, seed=0).fit(emb, data.scores, tasks, [])
    again_q = QualityEstimator.load(quality.save(tmp_path / "quality"))
    assert np.array_equal(again_q._predict(emb, tasks), quality._predict(emb, tasks))
