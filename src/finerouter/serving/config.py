"""The gateway's configuration: upstream endpoints (from YAML), gateway settings, client keys and tokens.

An upstreams file maps each model name *as the router knows it* to the OpenAI-compatible endpoint that
serves it::

    upstreams:
      gpt-4o-mini:
        base_url: https://api.openai.com/v1
        model: gpt-4o-mini            # the id the upstream expects (default: the key)
        api_key_env: OPENAI_API_KEY   # optional: the variable holding its key
        timeout_s: 30                 # optional: connect / between-bytes timeout
        stream_idle_timeout_s: 10     # optional: longest pause inside a streamed answer
      llama-3-8b:
        base_url: http://127.0.0.1:9001/v1
        model: meta-llama/Meta-Llama-3-8B-Instruct
        headers: {X-Team: routing}    # optional: extra headers sent upstream
    gateway:                          # optional: GatewaySettings fields
      max_attempts: 3
      cooldown_s: 30
      max_upstream_body_bytes: 33554432
      shutdown_timeout_s: 10
      budget_window_requests: 1000    # the sliding window budgets are met over
      request_log_dir: ./request-log  # opt-in: log decisions and take POST /v1/feedback
    keys:                             # optional: named client keys (turn auth on)
      team-a:
        token_env: TEAM_A_TOKEN       # the variable holding the client's bearer token
        budget_per_1k: 2.5            # optional: default budget, USD per 1,000 routed requests

Everything is checked when the gateway starts: an unknown key, a bad URL, a router model without an
upstream or an unset key variable is a :class:`ConfigError` naming the file, the model and the key. Key
values and client tokens are read from the environment once and never logged, echoed or shown in a ``repr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from finerouter._validation import check_choice, check_float, check_int
from finerouter.errors import ParameterError
from finerouter.serving.errors import ConfigError

ROUTE_ON = ("last_user", "user", "all")

ANONYMOUS_KEY = "anonymous"
"""The key name of requests without a named key (auth off, or a token from ``--auth-tokens-file``/``-env``)."""

_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_CLIENT_KEY_KEYS = {"token_env", "budget_per_1k"}

_UPSTREAM_KEYS = {
    "base_url", "model", "api_key_env", "timeout_s", "connect_timeout_s", "stream_idle_timeout_s", "headers"
}


@dataclass(frozen=True)
class Upstream:
    """One OpenAI-compatible endpoint serving one router model.

    Attributes:
        name: the model name as the router knows it (the key in the upstreams file).
        base_url: the API root, e.g. ``http://127.0.0.1:9001/v1``; requests go to ``{base_url}/chat/completions``.
        model: the model id sent upstream in the request's ``model`` field.
        api_key_env: the environment variable the key was read from (None: no key).
        timeout_s: the longest wait for the upstream to send the next bytes of its answer (its response head,
            the first event of a stream, and every read of a whole body).
        connect_timeout_s: the longest wait to open a connection.
        stream_idle_timeout_s: once a streamed answer has started, the longest pause between two of its chunks;
            a longer pause is a stalled stream, ended with an error event (at most ``timeout_s``).
        headers: extra headers sent with every request.
        api_key: the key itself; excluded from ``repr`` and never logged.
    """

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False, compare=False)
    stream_idle_timeout_s: float | None = None

    @property
    def stream_idle_s(self) -> float:
        """The pause allowed between two chunks of a started stream (``stream_idle_timeout_s`` or ``timeout_s``)."""
        return self.timeout_s if self.stream_idle_timeout_s is None else min(self.stream_idle_timeout_s, self.timeout_s)

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


@dataclass(frozen=True)
class ClientKey:
    """A named client key: its bearer token and its routing defaults.

    Attributes:
        name: the key's name (metrics label it so; it is no secret).
        token_env: the environment variable the token was read from.
        budget_per_1k: the budget (USD per 1,000 routed requests) of this key's routed requests that give
            neither ``cost_weight`` nor ``budget_per_1k`` themselves; None: no default budget.
        token: the bearer token itself; excluded from ``repr`` and never logged.
    """

    name: str
    token_env: str
    budget_per_1k: float | None = None
    token: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True)
class GatewaySettings:
    """How the gateway routes, retries and protects itself.

    Attributes:
        alias: the model name clients send to be routed (``"finerouter"``; ``"finerouter:tolerance=0.2"``).
        max_attempts: upstream attempts per request, the first choice included (fallback along the ranking).
        cooldown_s: how long a failed upstream is skipped (a 429's ``Retry-After`` can lengthen it).
        affinity_ttl_s: how long a conversation stays pinned to its model after its last turn.
        affinity_max_entries: the most conversations remembered (least recently used are forgotten).
        max_body_bytes: larger request bodies are refused with 413.
        route_on: the text routed on: ``"last_user"`` message, every ``"user"`` message, or ``"all"`` messages.
        default_tolerance: the tolerance used when a request gives none.
        route_max_batch: concurrent prompts are routed together in batches of at most this many.
        route_workers: routing calls that may run at once in worker threads.
        route_thread_nice: on Linux, added to the routing threads' nice value, 0 to 19 (0: same priority as
            the event loop; higher: the event loop wins the CPU when both compete).
        route_switch_interval_ms: while the gateway runs, the interpreter's GIL switch interval: the longest
            the event loop waits for the GIL while a routing thread runs Python (None: Python's own switch interval).
        max_route_prompts: the most prompts one ``/v1/route`` call may carry.
        max_connections: the size of each upstream's connection pool.
        max_upstream_body_bytes: the largest upstream answer the gateway reads: a larger non-streamed body is a
            failed attempt (the next model is tried), and a stream past it is ended with an error event.
        max_error_body_bytes: the largest upstream error body (a 4xx that is the request's fault) passed back;
            a larger one is replaced by the gateway's own error.
        shutdown_timeout_s: on SIGTERM or Ctrl-C, how long open requests and streams may go on; streams still
            open then are ended with an error event and the server exits.
        budget_window_requests: a budget (per request or per key) is met over the last this many requests routed
            under it (see :mod:`finerouter.serving.budget`).
        budget_window_s: also forget requests older than this many seconds (None: only the count bounds it).
        budget_max_windows: the most budget streams (client key x budget) kept; the least recently used one is
            forgotten beyond that.
        request_log_dir: log each routed request's decision and the clients' ``POST /v1/feedback`` scores to
            this folder (None: no log, and no feedback endpoint); see :mod:`finerouter.collect.request_log`.
        request_log_retention_days: log files older than this many days are deleted.
        request_log_prompts: ``"text"`` stores each prompt, ``"hash"`` only its SHA-256.
    """

    alias: str = "finerouter"
    max_attempts: int = 3
    cooldown_s: float = 30.0
    affinity_ttl_s: float = 3600.0
    affinity_max_entries: int = 10_000
    max_body_bytes: int = 2 * 1024 * 1024
    route_on: str = "last_user"
    default_tolerance: float = 0.0
    route_max_batch: int = 32
    route_workers: int = 1
    route_thread_nice: int = 0
    route_switch_interval_ms: float | None = 0.5
    max_route_prompts: int = 256
    max_connections: int = 512
    max_upstream_body_bytes: int = 32 * 1024 * 1024
    max_error_body_bytes: int = 64 * 1024
    shutdown_timeout_s: float = 10.0
    budget_window_requests: int = 1000
    budget_window_s: float | None = None
    budget_max_windows: int = 64
    request_log_dir: str | None = None
    request_log_retention_days: float = 30.0
    request_log_prompts: str = "text"

    def __post_init__(self) -> None:
        owner = "GatewaySettings"
        if not isinstance(self.alias, str) or not self.alias or ":" in self.alias:
            raise ParameterError(
                f"The 'alias' parameter of {owner} must be a non-empty str without ':'. Got {self.alias!r}."
            )
        check_int(self.max_attempts, "max_attempts", owner, low=1)
        check_float(self.cooldown_s, "cooldown_s", owner, low=0.0)
        check_float(self.affinity_ttl_s, "affinity_ttl_s", owner, low=0.0, closed="neither")
        check_int(self.affinity_max_entries, "affinity_max_entries", owner, low=1)
        check_int(self.max_body_bytes, "max_body_bytes", owner, low=1)
        check_choice(self.route_on, "route_on", owner, ROUTE_ON)
        check_float(self.default_tolerance, "default_tolerance", owner, low=0.0, high=1.0)
        check_int(self.route_max_batch, "route_max_batch", owner, low=1)
        check_int(self.route_workers, "route_workers", owner, low=1)
        check_int(self.route_thread_nice, "route_thread_nice", owner, low=0, high=19)
        if self.route_switch_interval_ms is not None:
            check_float(self.route_switch_interval_ms, "route_switch_interval_ms", owner, low=0.0, closed="neither")
        check_int(self.max_route_prompts, "max_route_prompts", owner, low=1)
        check_int(self.max_connections, "max_connections", owner, low=1)
        check_int(self.max_upstream_body_bytes, "max_upstream_body_bytes", owner, low=1024)
        check_int(self.max_error_body_bytes, "max_error_body_bytes", owner, low=256)
        check_float(self.shutdown_timeout_s, "shutdown_timeout_s", owner, low=0.0)
        check_int(self.budget_window_requests, "budget_window_requests", owner, low=1)
        if self.budget_window_s is not None:
            check_float(self.budget_window_s, "budget_window_s", owner, low=0.0, closed="neither")
        check_int(self.budget_max_windows, "budget_max_windows", owner, low=1)
        if self.request_log_dir is not None and (not isinstance(self.request_log_dir, str) or not self.request_log_dir):
            raise ParameterError(f"The 'request_log_dir' parameter of {owner} must be a folder path. Got {self.request_log_dir!r}.")
        check_float(self.request_log_retention_days, "request_log_retention_days", owner, low=0.0, closed="neither")
        check_choice(self.request_log_prompts, "request_log_prompts", owner, ("text", "hash"))


@dataclass(frozen=True)
class GatewayConfig:
    """Upstreams (by router model name), settings and named client keys; ``source`` names the file they came
    from."""

    upstreams: Mapping[str, Upstream]
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    source: str = "<config>"
    keys: Mapping[str, ClientKey] = field(default_factory=dict)

    def check_covers(self, models: Iterable[str]) -> None:
        """Raise ConfigError unless every router model has an upstream."""
        missing = [m for m in models if m not in self.upstreams]
        if missing:
            raise ConfigError(
                f"{self.source}: the router's model(s) {', '.join(repr(m) for m in missing)} have no upstream; "
                f"add them under 'upstreams:' (configured: {', '.join(sorted(self.upstreams)) or 'none'})."
            )


def _fail(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def _check_entry(raw: Any, allowed: set[str], *, source: str, where: str, needs: str) -> Mapping[str, Any]:
    """``raw`` as a mapping holding only ``allowed`` keys (ConfigError naming ``where`` otherwise)."""
    if not isinstance(raw, Mapping):
        raise _fail(source, where, f"must be a mapping with {needs}. Got {type(raw).__name__}.")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(
            source, where, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}."
        )
    return raw


def _parse_upstream(
    name: str, raw: Any, *, source: str, environ: Mapping[str, str]
) -> Upstream:
    where = f"upstreams.{name}"
    raw = _check_entry(raw, _UPSTREAM_KEYS, source=source, where=where, needs="at least 'base_url'")
    base_url = raw.get("base_url")
    if not isinstance(base_url, str):
        raise _fail(source, f"{where}.base_url", "is required and must be a string such as 'http://127.0.0.1:9001/v1'.")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail(source, f"{where}.base_url", f"must be an http(s) URL. Got {base_url!r}.")
    model = raw.get("model", name)
    if not isinstance(model, str) or not model:
        raise _fail(source, f"{where}.model", f"must be a non-empty string. Got {model!r}.")
    timeouts: dict[str, float] = {}
    for key, default in (("timeout_s", 30.0), ("connect_timeout_s", None), ("stream_idle_timeout_s", None)):
        value = raw.get(key, default)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise _fail(source, f"{where}.{key}", f"must be a positive number of seconds. Got {value!r}.")
        timeouts[key] = float(value)
    timeouts.setdefault("connect_timeout_s", min(5.0, timeouts["timeout_s"]))
    if timeouts.get("stream_idle_timeout_s", 0.0) > timeouts["timeout_s"]:
        raise _fail(
            source,
            f"{where}.stream_idle_timeout_s",
            f"must not exceed timeout_s ({timeouts['timeout_s']:g} s), which bounds every read. "
            f"Got {timeouts['stream_idle_timeout_s']:g}.",
        )
    headers = raw.get("headers", {}) or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in headers.items()
    ):
        raise _fail(source, f"{where}.headers", "must be a mapping of header names to strings.")
    if any(k.lower() == "authorization" for k in headers):
        raise _fail(source, f"{where}.headers", "must not set Authorization; use api_key_env.")
    key_env = raw.get("api_key_env")
    api_key = None
    if key_env is not None:
        if not isinstance(key_env, str) or not key_env:
            raise _fail(source, f"{where}.api_key_env", f"must be an environment variable name. Got {key_env!r}.")
        api_key = environ.get(key_env)
        if not api_key:
            raise _fail(
                source,
                f"{where}.api_key_env",
                f"the environment variable {key_env} is not set (or empty); export it before starting the gateway.",
            )
    return Upstream(
        name=name,
        base_url=base_url,
        model=model,
        api_key_env=key_env,
        timeout_s=timeouts["timeout_s"],
        connect_timeout_s=timeouts["connect_timeout_s"],
        stream_idle_timeout_s=timeouts.get("stream_idle_timeout_s"),
        headers={str(k): str(v) for k, v in headers.items()},
        api_key=api_key,
    )


def _parse_settings(raw: Any, *, source: str) -> GatewaySettings:
    if raw is None:
        return GatewaySettings()
    if not isinstance(raw, Mapping):
        raise _fail(source, "gateway", f"must be a mapping of settings. Got {type(raw).__name__}.")
    allowed = {f.name for f in fields(GatewaySettings)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(source, "gateway", f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}.")
    try:
        return GatewaySettings(**dict(raw))
    except ParameterError as exc:
        raise _fail(source, "gateway", str(exc)) from None


def _parse_keys(raw: Any, *, source: str, environ: Mapping[str, str]) -> dict[str, ClientKey]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail(source, "keys", f"must map key names to {{token_env: ..., budget_per_1k: ...}}. Got {type(raw).__name__}.")
    keys: dict[str, ClientKey] = {}
    tokens: dict[str, str] = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not _KEY_NAME.match(name) or name == ANONYMOUS_KEY:
            raise _fail(
                source, "keys",
                f"key names must be 1-64 letters, digits, '_', '.' or '-' (not {ANONYMOUS_KEY!r}). Got {name!r}.",
            )
        where = f"keys.{name}"
        spec = _check_entry(spec, _CLIENT_KEY_KEYS, source=source, where=where, needs="'token_env'")
        env = spec.get("token_env")
        if not isinstance(env, str) or not env:
            raise _fail(source, f"{where}.token_env", f"is required: the environment variable holding the token. Got {env!r}.")
        token = environ.get(env, "").strip()
        if not token:
            raise _fail(source, f"{where}.token_env", f"the environment variable {env} is not set (or empty).")
        if any(c.isspace() for c in token):
            raise _fail(source, f"{where}.token_env", f"the token in {env} must not contain whitespace.")
        if token in tokens:
            raise _fail(source, f"{where}.token_env", f"the token in {env} is also the token of keys.{tokens[token]}.")
        tokens[token] = name
        budget = spec.get("budget_per_1k")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < float("inf")
        ):
            raise _fail(source, f"{where}.budget_per_1k", f"must be a number >= 0 (USD per 1,000 requests). Got {budget!r}.")
        keys[name] = ClientKey(name, env, None if budget is None else float(budget), token)
    return keys


def parse_gateway_config(
    raw: Any, *, source: str = "<config>", environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate an already-parsed configuration mapping (``{"upstreams": {...}, "gateway": {...}}``)."""
    environ = os.environ if environ is None else environ
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: must be a mapping with an 'upstreams:' section. Got {type(raw).__name__}.")
    unknown = sorted(set(raw) - {"upstreams", "gateway", "keys"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(map(repr, unknown))}; allowed: 'gateway', 'keys', 'upstreams'."
        )
    ups = raw.get("upstreams")
    if not isinstance(ups, Mapping) or not ups:
        raise ConfigError(f"{source}: 'upstreams:' is required and must map model names to endpoints.")
    upstreams: dict[str, Upstream] = {}
    for name, spec in ups.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: upstreams: model names must be non-empty strings. Got {name!r}.")
        upstreams[name] = _parse_upstream(name, spec, source=source, environ=environ)
    settings = _parse_settings(raw.get("gateway"), source=source)
    if settings.alias in upstreams:
        raise ConfigError(f"{source}: upstreams.{settings.alias}: clashes with the routing alias {settings.alias!r}.")
    keys = _parse_keys(raw.get("keys"), source=source, environ=environ)
    return GatewayConfig(upstreams=upstreams, settings=settings, source=source, keys=keys)


def load_gateway_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read and validate an upstreams YAML file (see the module docstring for its keys)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the upstreams file ({exc.strerror or exc}).") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_gateway_config(raw, source=str(path), environ=environ)


def load_auth_tokens(
    path: str | os.PathLike[str] | None = None,
    env_var: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> frozenset[str]:
    """Client bearer tokens from a file (one a line, ``#`` comments) and/or a variable (comma-separated).

    Returns an empty set when neither is given (auth off). A file or variable that is given but holds no
    token is a ConfigError: silently running without auth would be worse.
    """
    environ = os.environ if environ is None else environ
    tokens: set[str] = set()
    if path is not None:
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the token file ({exc.strerror or exc}).") from None
        found = {ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")}
        if not found:
            raise ConfigError(f"{p}: the token file holds no token (one per line; '#' starts a comment).")
        tokens |= found
    if env_var is not None:
        value = environ.get(env_var, "")
        found = {t.strip() for t in value.split(",") if t.strip()}
        if not found:
            raise ConfigError(f"the environment variable {env_var} (client tokens) is not set or empty.")
        tokens |= found
    bad = [t for t in tokens if any(c.isspace() for c in t)]
    if bad:
        raise ConfigError("client tokens must not contain whitespace.")
    return frozenset(tokens)


__all__ = [
    "ANONYMOUS_KEY",
    "ROUTE_ON",
    "ClientKey",
    "GatewayConfig",
    "GatewaySettings",
    "Upstream",
    "load_auth_tokens",
    "load_gateway_config",
    "parse_gateway_config",
]
