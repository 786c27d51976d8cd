"""Saving a fitted :class:`~finerouter.routing.router.FineRouter` as an artifact folder and loading it back (the
file format and its checks: :mod:`finerouter.routing.artifact`)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._io import atomic_directory, atomic_write_json, load_arrays, save_arrays, sha256_file
from finerouter._version import __version__
from finerouter.errors import ArtifactError
from finerouter.routing import artifact
from finerouter.routing.artifact import check_save_destination
from finerouter.routing.costs import CostModel, token_counter_for
from finerouter.routing.mixing import Calibration, MixingChoice


def save_router(router: Any, path: str | Path, *, force: bool = False) -> Path:
    """:meth:`FineRouter.save`: each fitted component into a folder of its own, the router's arrays, the manifest."""
    from finerouter.routing.components import COMPONENTS
    from finerouter.routing.onboarding import model_provenance

    router._check_fitted()
    if getattr(router, "discovery_", None) is None:
        raise ArtifactError(
            "this router was loaded from an artifact of format 1 or 2, which did not keep its task discovery; "
            "refit it to save it in the current format"
        )
    path = check_save_destination(path, force=force)
    identity, probes = artifact.encoder_identity(router.encoder_)
    with atomic_directory(path) as tmp:
        for name, component in router._fitted_components().items():
            component.save(tmp / name)
        arrays = {
            "stage1": router.stage1_, "global_prior": router.global_prior_, "encoder_probes": probes,
            "calibration_x": router.calibration_.x, "calibration_y": router.calibration_.y,
        }
        from finerouter.routing.ensemble import members_of

        with_neighbours = [r for r in (router, *members_of(router)) if getattr(r, "neighbour_embeddings_", None) is not None]
        if with_neighbours:  # the training prompts and scores, for every fit whose mix reads the neighbour source
            arrays["neighbour_embeddings"] = with_neighbours[0].neighbour_embeddings_
            arrays["neighbour_scores"] = with_neighbours[0].neighbour_scores_
        arrays.update(_label_arrays(router))
        save_arrays(tmp / "router.safetensors", arrays)
        members = save_members(router, tmp)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        params = {k: v for k, v in router.get_params(deep=False).items()
                  if k not in ("encoder", "describer", "prices", "cache_dir", "engine")}
        for name in COMPONENTS:  # the parameters each component was built with (where it ran is not one)
            params[name] = {k: v for k, v in router.make_component(name).get_params(deep=False).items()
                            if k != "engine"}
        manifest = {
            "format": artifact.ARTIFACT_FORMAT,
            "format_version": artifact.ARTIFACT_FORMAT_VERSION,
            "library_version": __version__,
            "created_unix": int(time.time()),
            "config": params,
            "models": router.models_,
            "mixing_weights": router.mixing_.to_dict(),
            "label_prior_labels": _label_names(router),
            "n_features": router.n_features_,
            "n_tasks": router.catalog_.n_tasks,
            "costs": router.cost_model_.to_dict(),
            "encoder": identity,
            "fit_summary": getattr(router, "fit_summary_", {}),
            "provenance": model_provenance(router),
            "files": files,
            "members": members,
        }
        manifest[artifact.MANIFEST_DIGEST_KEY] = artifact.manifest_digest(manifest)
        atomic_write_json(tmp / "manifest.json", manifest)
    return path


def save_members(router: Any, tmp: Path) -> list[dict[str, Any]]:
    """Each member of a seed ensemble (:mod:`finerouter.routing.ensemble`) into ``members/<i>/``: its components,
    stage-1 prior and calibration (its mixing goes into the manifest's ``members`` list, which this returns;
    everything else it shares with the router)."""
    from finerouter.routing.ensemble import members_of

    entries = []
    for i, member in enumerate(members_of(router), start=1):
        folder = tmp / "members" / str(i)
        for name, component in member._fitted_components().items():
            component.save(folder / name)
        save_arrays(folder / "router.safetensors", {"stage1": member.stage1_, "calibration_x": member.calibration_.x,
                                                     "calibration_y": member.calibration_.y, **_label_arrays(member)})  # fmt: skip
        entries.append({"folder": f"members/{i}", "seed": int(member.seed), "n_tasks": member.catalog_.n_tasks,
                        "mixing_weights": member.mixing_.to_dict(), "label_prior_labels": _label_names(member),
                        "task_shares": (getattr(member, "fit_summary_", None) or {}).get("task_shares")})  # fmt: skip
    return entries


def _label_arrays(router: Any) -> dict[str, np.ndarray]:
    prior = getattr(router, "label_prior_", None)
    return {} if prior is None else prior.to_arrays()


def _label_names(router: Any) -> list[str] | None:
    prior = getattr(router, "label_prior_", None)
    return None if prior is None else list(prior.labels)


def _load_label_prior(router: Any, labels: Any, arrays: dict[str, np.ndarray], folder: Path) -> None:
    """Set ``router.label_prior_`` from the saved labels and arrays (None without); an ArtifactError when the mixing
    reads the label prior and the artifact lacks it, or its arrays do not fit."""
    from finerouter.errors import DataError
    from finerouter.routing.label_prior import LabelPrior

    router.label_prior_ = None
    if labels is None:
        if router.mixing_.assignment == "label":
            raise ArtifactError(f"{folder}: the router's mix reads the label prior, and the manifest lacks its labels")
        return
    try:
        router.label_prior_ = LabelPrior.from_arrays(labels, arrays)
    except DataError as exc:
        raise ArtifactError(f"{folder}: {exc}") from None


def _read_arrays(folder: Path, what: str) -> dict[str, np.ndarray]:
    """``folder/router.safetensors``; a corrupt but hash-consistent file is an ArtifactError naming ``what``."""
    try:
        return load_arrays(folder / "router.safetensors")
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{folder}: could not load {what} ({type(exc).__name__}: {exc})") from exc


def load_members(
    router: Any, path: Path, manifest: dict[str, Any], params: dict[str, Any], shared: dict[str, np.ndarray]
) -> list[Any]:
    """The members of a seed ensemble saved by :func:`save_members` (none for a single fit or an older artifact)."""
    from finerouter.routing.ensemble import share_with_member

    members = []
    for entry in manifest.get("members") or []:
        folder = path / str(entry["folder"])
        member = type(router)(encoder=router.encoder, cache_dir=router.cache_dir,
                              **{**params, "seed": int(entry["seed"]), "ensemble_size": 1})  # fmt: skip
        discovery, catalog, classifier, quality = artifact.load_components(folder, manifest)
        arrays = _read_arrays(folder, "the ensemble member")
        try:
            member.stage1_ = arrays["stage1"].astype(np.float64)
            member.calibration_ = Calibration(arrays["calibration_x"].astype(np.float64),
                                              arrays["calibration_y"].astype(np.float64))  # fmt: skip
            member.mixing_ = MixingChoice.from_dict(entry["mixing_weights"])
        except Exception as exc:  # a member entry or file without what a member needs
            raise ArtifactError(f"{folder}: could not load the ensemble member ({type(exc).__name__}: {exc})") from exc
        _load_label_prior(member, entry.get("label_prior_labels"), arrays, folder)
        member.discovery_, member.catalog_, member.classifier_, member.quality_ = discovery, catalog, classifier, quality
        member.discovery_labels_ = None if discovery is None else discovery.labels_
        if member.mixing_.uses_neighbours and "neighbour_embeddings" not in shared:
            raise ArtifactError(f"{folder}: the member's mix reads the neighbour source, and router.safetensors lacks it")
        member.neighbour_embeddings_ = shared.get("neighbour_embeddings") if member.mixing_.uses_neighbours else None
        member.neighbour_scores_ = shared.get("neighbour_scores") if member.mixing_.uses_neighbours else None
        member.settings_ = {**router.settings_, "ensemble_size": 1}
        # what add_model and scoring read of a member's fit: its tasks' shares, and its training data's size (the
        # router's: a member is fitted on the same prompts)
        summary = {"task_shares": entry.get("task_shares"), "n_prompts": router.fit_summary_.get("n_prompts")}
        member.fit_summary_ = {k: v for k, v in summary.items() if v is not None}
        share_with_member(member, router)
        members.append(member)
    return members


def load_router(
    cls: Any, path: str | Path, *, encoder: Any = None, cache_dir: Any = None, check_encoder: bool = True
) -> Any:
    """:meth:`FineRouter.load` (see there)."""
    from finerouter.routing.components import COMPONENTS

    path = Path(path)
    manifest = artifact.read_manifest(path)
    artifact.check_integrity(path, manifest)
    saved = dict(manifest["config"])
    known = set(cls._parameter_constraints) - {"encoder", "describer", "cache_dir", "engine"}
    params = {k: v for k, v in saved.items() if k in known}
    for name in COMPONENTS:  # empty dicts (older artifacts) mean the defaults
        params[name] = params.get(name) or None
    router = cls(encoder=encoder, cache_dir=cache_dir, **params)
    discovery, catalog, classifier, quality = artifact.load_components(path, manifest)
    arrays = _read_arrays(path, "the artifact")
    router.discovery_, router.catalog_, router.classifier_, router.quality_ = discovery, catalog, classifier, quality
    router.discovery_labels_ = None if discovery is None else discovery.labels_
    router.stage1_ = arrays["stage1"].astype(np.float64)
    if "global_prior" in arrays:
        router.global_prior_ = arrays["global_prior"].astype(np.float64)
    else:  # saved before the learned mixing: Eq. 5 only, which reads no global prior
        router.global_prior_ = np.zeros(router.stage1_.shape[1])
    if "calibration_x" in arrays:
        router.calibration_ = Calibration(
            arrays["calibration_x"].astype(np.float64), arrays["calibration_y"].astype(np.float64)
        )
    else:
        router.calibration_ = Calibration.identity()
    if "mixing_weights" in manifest:
        router.mixing_ = MixingChoice.from_dict(manifest["mixing_weights"])
    else:
        router.mixing_ = MixingChoice.fixed(router.alpha, 1.0 - router.alpha, 0.0)
    router.out_of_fold_ = None  # the fit's out-of-fold scores are not saved
    _load_label_prior(router, manifest.get("label_prior_labels"), arrays, path)
    own = router.mixing_.uses_neighbours
    router.neighbour_embeddings_ = arrays.get("neighbour_embeddings") if own else None
    router.neighbour_scores_ = arrays.get("neighbour_scores") if own else None
    if router.mixing_.uses_neighbours and router.neighbour_embeddings_ is None:
        raise ArtifactError(f"{path}: the router's mix reads the neighbour source, and router.safetensors lacks it")
    router.models_ = list(manifest["models"])
    router.n_features_ = int(manifest["n_features"])
    router.fit_summary_ = manifest.get("fit_summary", {})
    # what each "auto" resolved to at fit, kept in the fit summary (older artifacts: none)
    router.settings_ = dict(router.fit_summary_.get("settings") or {})
    router.provenance_ = dict(manifest.get("provenance") or {})  # per model: "fitted" or {"added": n_prompts}
    router.encoder_ = artifact.load_encoder(manifest["encoder"], encoder, cache_dir, path)
    router.cost_model_ = CostModel.from_dict(manifest["costs"], token_counter_for(router.encoder_))
    if check_encoder:
        if "encoder_probes" in arrays:
            artifact.check_encoder(router.encoder_, arrays["encoder_probes"], manifest["encoder"], path)
        else:

            warnings.warn(
                f"{path}: artifact format {manifest.get('format_version')} fingerprinted its encoder with "
                "probe sentences this version no longer uses, so the encoder is not checked; refit the router "
                "to record the current probes.",
                stacklevel=2,
            )
    router.members_ = load_members(router, path, manifest, params, arrays)
    return router
