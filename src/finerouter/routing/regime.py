"""Settings that depend on how much data the router is fitted on: what ``"auto"`` means for a parameter.

At a few hundred to a couple of thousand scored prompts a single fit is noisy: which tasks discovery finds, which
mix the cross-validation keeps and whether it falls back to the best single model all move with the seed (on
routerdc with 1,500 prompts five seeds routed one test split at 0.501-0.511), and the held-out folds, each fitted on
a fraction of an already small set, understate the final router. There the router gains from averaging several
fits (``ensemble_size``), from more folds (``cv_folds``) and, except in pools of many near-identical models, from
reading every task's prior in proportion to the classifier's belief rather than the one most likely task's; since
which prior wins depends on the pool, ``stage1_assignment="cv"`` lets each fit's cross-validation choose. With many
thousands of prompts a fit is stable, those settings cost fit time and gain nothing measurable, and the single fit
is kept.
``ensemble_size`` and ``stage1_assignment`` are ``"auto"`` by default; ``cv_folds`` stays 3 unless asked.

``neighbours="auto"`` (the default) depends on what discovery found rather than on the data's size
(:func:`resolve_neighbours`): where most training prompts fall in no task (:func:`weak_tasks`), Stage 1 holds no
task structure (judge scores of dozens of models rank every prompt's models so differently that almost no graph
edge passes the ranking filter: ``bench/ranking_agreement.py``), and the neighbour source is offered to the mixing in
its place, as the cross-validation's default mix (each prompt's nearest training prompts stand in for the task it
has none of; :func:`finerouter.routing.fitting.cross_validate_mixing`).

``"auto"`` resolves at ``fit`` from the number of unique training prompts (:func:`is_small`); the values a fit used
are ``router.settings_`` and ``fit_summary_["settings"]``, and an artifact keeps them. docs/models.md has the
measurements behind each choice.
"""

from __future__ import annotations

from typing import Any

#: Training sets of at most this many unique prompts are "small" for the ``"auto"`` settings.
SMALL_DATA_PROMPTS = 2000

#: ``parameter: (value on small data, value otherwise)`` for each parameter that accepts ``"auto"``.
AUTO_VALUES: dict[str, tuple[Any, Any]] = {
    "ensemble_size": (3, 1),
    "stage1_assignment": ("cv", "hard"),
    "cv_folds": (5, 3),
}


#: With ``neighbours="auto"``, the neighbour source is offered when at least this share of the training prompts is in
#: "Others" (no discovered task).
WEAK_TASKS_OTHERS_SHARE = 0.5


def weak_tasks(others_share: float) -> bool:
    """Whether discovery found no task structure to speak of: at least :data:`WEAK_TASKS_OTHERS_SHARE` of the
    training prompts are in "Others"."""
    return bool(others_share >= WEAK_TASKS_OTHERS_SHARE)


def resolve_neighbours(value: Any, others_share: float) -> bool:
    """Whether the mixing offers the neighbour source: ``value`` itself, or for ``"auto"``
    :func:`weak_tasks`."""
    if isinstance(value, str) and value == "auto":
        return weak_tasks(others_share)
    return bool(value)


def is_small(n_prompts: int) -> bool:
    """Whether ``n_prompts`` unique training prompts is small data for the ``"auto"`` settings."""
    return int(n_prompts) <= SMALL_DATA_PROMPTS


def resolve(name: str, value: Any, n_prompts: int) -> Any:
    """The value parameter ``name`` takes on ``n_prompts`` unique training prompts: ``value`` itself, or for
    ``"auto"`` the one :data:`AUTO_VALUES` gives for that much data."""
    if isinstance(value, str) and value == "auto" and name in AUTO_VALUES:
        small, otherwise = AUTO_VALUES[name]
        return small if is_small(n_prompts) else otherwise
    return value


def resolve_settings(router: Any, n_prompts: int) -> dict[str, Any]:
    """Every data-dependent setting of ``router`` resolved for ``n_prompts`` unique training prompts."""
    return {name: resolve(name, getattr(router, name), n_prompts) for name in AUTO_VALUES}


def setting(router: Any, name: str) -> Any:
    """The value of ``name`` the router was fitted with (``settings_``), else its parameter (an unfitted router, or
    an artifact saved before the settings were recorded, where no parameter could be ``"auto"``)."""
    settings = getattr(router, "settings_", None)
    if settings and name in settings:
        return settings[name]
    return getattr(router, name, None)


__all__ = [
    "AUTO_VALUES", "SMALL_DATA_PROMPTS", "WEAK_TASKS_OTHERS_SHARE", "is_small", "resolve", "resolve_neighbours",
    "resolve_settings", "setting", "weak_tasks",
]  # fmt: skip
