"""A fitted router on disk: the manifest, its integrity checks, the encoder's identity, and the safe replacement
of a previous artifact. :meth:`FineRouter.save` and :meth:`FineRouter.load` are thin over this module.

Layout (format 3): ``manifest.json`` (format, library version, the router's parameters, the encoder's identity,
each file's SHA-256 and a digest of the manifest itself), ``router.safetensors`` (the priors, the calibration and
the encoder's probe embeddings), and one folder per fitted component (``discovery/``, ``classifier/``,
``quality/``), each written by the component's own ``save``. Formats 1 and 2 (one file pair per component and
fingerprints over an older probe list) still load.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from finerouter._io import load_arrays, sha256_file
from finerouter._version import __version__
from finerouter.errors import ArtifactError

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT = "finerouter-router"
#: 3: one folder per component and the encoder identified by its ``config()`` and the shared probe sentences.
#: 2: the manifest carries ``manifest_sha256``, a digest of its own content. 1: the manifest was unchecked.
ARTIFACT_FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
MANIFEST_DIGEST_KEY = "manifest_sha256"
#: The smallest cosine between a probe sentence's saved embedding and the given encoder's at which the encoder
#: still counts as the one the router was fitted with (float32 vs bfloat16 of one model stay above it).
MIN_PROBE_COSINE = 0.98


# ---------------------------------------------------------------------------------------------------- manifest
def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's content without its digest field: canonical JSON (sorted keys, compact, ASCII)
    of the manifest as it reads back from disk, so the digest does not depend on the file's formatting."""
    content = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    content = json.loads(json.dumps(content, ensure_ascii=False, allow_nan=False))  # as it will read back
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def artifact_files(path: Path) -> list[str]:
    """Every file under ``path`` but the manifest, as POSIX paths relative to ``path``."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() or p.is_symlink())


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the artifact at ``path``, its format and library version checked (ArtifactError if not)."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: not a FineRouter artifact (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: not a FineRouter artifact manifest (not a JSON object)")
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{manifest_path}: format {manifest.get('format')!r} is not {ARTIFACT_FORMAT!r}")
    if manifest.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{manifest_path}: artifact format version {manifest.get('format_version')} is not supported "
            f"(this library reads versions 1 to {ARTIFACT_FORMAT_VERSION})"
        )
    saved_version = str(manifest.get("library_version", "?"))
    if saved_version.split(".")[0] != __version__.split(".")[0]:
        raise ArtifactError(f"{path}: saved by finerouter {saved_version}, incompatible with {__version__}")
    if saved_version != __version__:
        warnings.warn(f"{path}: saved by finerouter {saved_version}, loading with {__version__}", stacklevel=3)
    return manifest


def check_integrity(path: Path, manifest: dict[str, Any]) -> None:
    """Raise ArtifactError naming the file unless the artifact at ``path`` is exactly what its manifest says."""
    manifest_path = path / "manifest.json"
    if manifest.get("format_version") == 1:
        warnings.warn(
            f"{path}: artifact format 1: its manifest.json is not covered by the integrity check; load it and "
            "save it again (FineRouter.save) to add the check.",
            stacklevel=3,
        )
    elif manifest.get(MANIFEST_DIGEST_KEY) != manifest_digest(manifest):
        raise ArtifactError(
            f"{manifest_path}: manifest.json was altered (its content does not match its {MANIFEST_DIGEST_KEY})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ArtifactError(f"{manifest_path}: 'files' must map each file of the artifact to its SHA-256")
    present = set(artifact_files(path)) - {"manifest.json"}
    for rel, digest in files.items():
        f = path / rel
        if rel not in present or not f.is_file():
            raise ArtifactError(f"{path}: file {rel} listed in the manifest is missing")
        if sha256_file(f) != digest:
            raise ArtifactError(f"{path}: file {rel} was altered (SHA-256 does not match the manifest)")
    extra = sorted(present - set(files))
    if extra:
        raise ArtifactError(f"{path}: file {extra[0]} is not part of the artifact (not listed in the manifest)")


def _replace_problem(path: Path) -> str | None:
    """Why replacing ``path`` would lose something other than a previous router artifact (None: it would not)."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_dir():
        return "it is a file, not a router artifact"
    if not any(path.iterdir()):
        return None
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        return "it is a folder that is not a router artifact (no router manifest.json)"
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    extra = [f for f in artifact_files(path) if f != "manifest.json" and f not in listed]
    if extra:
        return f"it holds {extra[0]!r}, which is not part of the router artifact"
    return None


def check_save_destination(path: str | Path, *, force: bool = False) -> Path:
    """Check that saving a router to ``path`` would replace nothing but a previous router artifact.

    ``path`` may be absent, an empty folder, or a router artifact written by :meth:`FineRouter.save` (recognised
    by its manifest, every file in it listed there). Anything else (a file, a folder of other files, an artifact
    folder with files added) raises ArtifactError, one line naming ``path``, unless ``force``: then it is
    replaced, whatever it holds. ``finerouter fit`` calls this before fitting, so a refusal costs no fit.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    problem = _replace_problem(path)
    if problem is None:
        return path
    if force:
        logger.warning("replacing %s (%s): forced", path, problem)
        return path
    raise ArtifactError(
        f"{path}: not replaced, {problem}; choose another path, or force it "
        "(CLI: --force; FineRouter.save(path, force=True)), which deletes what it holds"
    )


# ----------------------------------------------------------------------------------------------------- encoder
def encoder_identity(encoder: Any) -> tuple[dict[str, Any], np.ndarray]:
    """``(manifest entry, probe embeddings)`` that identify ``encoder``.

    The entry holds its name, dimension, the fingerprint of :mod:`finerouter.encoders.probes` and, when the encoder
    implements ``config()`` (and its class ``from_config``), its class and config, from which :func:`load_encoder`
    rebuilds it. The ``(8, dim)`` probe embeddings are what :func:`check_encoder` compares a given encoder with.
    """
    from finerouter.encoders import unwrap_encoder
    from finerouter.encoders.probes import fingerprint_from_probes, probe_embeddings

    probes = probe_embeddings(encoder)
    inner = unwrap_encoder(encoder)
    entry: dict[str, Any] = {
        "name": encoder.name,
        "dim": int(encoder.dim),
        "fingerprint": fingerprint_from_probes(probes),
        "class": None,
        "config": None,
    }
    config = getattr(inner, "config", None)
    if callable(config) and callable(getattr(type(inner), "from_config", None)):
        entry["class"] = f"{type(inner).__module__}:{type(inner).__qualname__}"
        entry["config"] = config()
    return entry, probes


def _import_class(qualified: str, path: Path) -> type:
    module_name, _, qualname = qualified.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(
            f"{path}: the router's encoder class {qualified!r} cannot be imported ({exc}); install the package "
            "that defines it, or pass the encoder as FineRouter.load(path, encoder=...)"
        ) from exc
    if not isinstance(obj, type) or not callable(getattr(obj, "from_config", None)):
        raise ArtifactError(f"{path}: {qualified!r} is not an encoder class with from_config")
    return obj


def load_encoder(info: dict[str, Any], encoder: Any, cache_dir: Any, path: Path) -> Any:
    """The encoder a loaded router uses: ``encoder`` when given (a name or an object), else rebuilt from the
    manifest entry ``info`` (its class's ``from_config``; older artifacts: the sentence-transformers spec)."""
    from finerouter.encoders import CachedEncoder, get_encoder

    if encoder is not None and not isinstance(encoder, str):
        return CachedEncoder(encoder, cache_dir) if cache_dir is not None else encoder
    if isinstance(encoder, str):  # read long prompts as the router was fitted to (an "auto" never resolves here)
        cut = (info.get("config") or {}).get("truncation")
        kw = {"truncation": cut} if cut in ("tail", "head_tail") else {}
        return get_encoder(encoder, cache_dir=cache_dir, **kw)
    config = info.get("config")
    qualified = info.get("class")
    if config is None and info.get("spec") is not None:  # formats 1-2: a sentence-transformers spec
        config, qualified = dict(info["spec"]), "finerouter.encoders.sentence_transformer:SentenceTransformerEncoder"
        if "precision" not in config:  # saved before the precision was recorded: the name says whether it was bf16
            config["precision"] = "bfloat16" if "|bf16" in str(info.get("name", "")) else "float32"
    if config is None or qualified is None:
        raise ArtifactError(
            f"{path}: the router was trained with a custom encoder {info.get('name')!r} that has no config(); "
            "pass it as FineRouter.load(path, encoder=...)"
        )
    cls = _import_class(qualified, path)
    check_precision = getattr(cls, "check_loadable", None)
    if callable(check_precision):
        problem = check_precision(config)
        if problem:
            raise ArtifactError(f"{path}: {problem}")
    built = cls.from_config(config)
    return CachedEncoder(built, cache_dir) if cache_dir is not None else built


def check_encoder(encoder: Any, saved_probes: np.ndarray, info: dict[str, Any], path: Path) -> None:
    """Refuse (ArtifactError) an encoder that embeds the probe sentences of :mod:`finerouter.encoders.probes`
    differently from the saved embeddings: another width, or a probe whose two vectors' cosine is below
    :data:`MIN_PROBE_COSINE` (another model, other settings, or a rotated space)."""
    from finerouter.encoders.probes import probe_agreement, probe_embeddings

    saved = np.asarray(saved_probes, dtype=np.float32)
    if int(encoder.dim) != saved.shape[1]:
        raise ArtifactError(
            f"{path}: encoder mismatch: the router was trained with {info.get('name')!r} (dim {saved.shape[1]}), "
            f"but {encoder.name!r} gives dim {encoder.dim}"
        )
    saved_name, name = str(info.get("name", "")), str(encoder.name)
    if saved_name != name and _without_cut(saved_name) == _without_cut(name):  # the probes are short: they cannot tell
        warnings.warn(
            f"{path}: the router was fitted with {saved_name!r} and is given {name!r}: the same model, reading "
            "prompts longer than its window at other tokens, so routing them will differ from the fit's",
            stacklevel=3,
        )
    cosine = probe_agreement(probe_embeddings(encoder), saved)
    if cosine < MIN_PROBE_COSINE:
        raise ArtifactError(
            f"{path}: encoder mismatch: {encoder.name!r} embeds the probe sentences differently from the encoder "
            f"the router was trained with ({info.get('name')!r}; min cosine {cosine:.3f} < {MIN_PROBE_COSINE})"
        )


def _without_cut(name: str) -> str:
    """An encoder name without its ``|trunc=...`` part (which tokens of a long text it reads)."""
    return "|".join(part for part in name.split("|") if not part.startswith("trunc="))


# ------------------------------------------------------------------------------------------------- components
def load_components(path: Path, manifest: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """``(discovery or None, catalog, classifier or None, quality)`` of the artifact at ``path``.

    Format 3 keeps one folder per component; formats 1-2 kept the catalog folder and a JSON + safetensors pair
    for the classifier and the quality estimator (their discovery was not saved: None). The layout is read from
    the folders present.
    """
    from finerouter.classify import TaskClassifier
    from finerouter.discovery import TaskCatalog, TaskDiscovery
    from finerouter.quality import QualityEstimator

    try:
        if (path / "discovery").is_dir():
            discovery = TaskDiscovery.load(path / "discovery")
            classifier = TaskClassifier.load(path / "classifier") if (path / "classifier").is_dir() else None
            return discovery, discovery.catalog_, classifier, QualityEstimator.load(path / "quality")
        classifier = None
        if (path / "classifier.json").is_file():
            classifier = TaskClassifier.from_state(
                json.loads((path / "classifier.json").read_text()), load_arrays(path / "classifier.safetensors")
            )
        quality = QualityEstimator.from_state(
            json.loads((path / "quality.json").read_text()), load_arrays(path / "quality.safetensors")
        )
        return None, TaskCatalog.load(path / "catalog"), classifier, quality
    except ArtifactError:
        raise
    except Exception as exc:  # a corrupt but hash-consistent file, or a missing unlisted file
        raise ArtifactError(f"{path}: could not load the artifact ({type(exc).__name__}: {exc})") from exc


__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_FORMAT_VERSION",
    "MANIFEST_DIGEST_KEY",
    "check_encoder",
    "check_integrity",
    "check_save_destination",
    "encoder_identity",
    "load_components",
    "load_encoder",
    "manifest_digest",
    "read_manifest",
]
