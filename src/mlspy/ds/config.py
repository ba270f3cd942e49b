"""The configuration of ``mlspy serve`` and ``mlspy admin``: defaults < TOML file < environment
(``MLSPY_*``) < command-line options.

Theory of operation. A setting is a field of one of the frozen dataclasses below; its section
is the TOML table it lives in (the top-level keys have none) and its environment variable is
``MLSPY_`` + section + key in upper case (``port`` → ``MLSPY_PORT``, ``[log] level`` →
``MLSPY_LOG_LEVEL``, ``[limits] ws_idle_timeout`` → ``MLSPY_LIMITS_WS_IDLE_TIMEOUT``). The
``[limits]`` table is :class:`mlspy.ds.limits.Limits` itself, so every field added there is a
setting here with nothing else to change. Each layer is checked on its own: an unknown key or a
value of the wrong type is a :class:`ConfigError` naming the key, where it came from and what
is expected; ``mlspy serve`` turns it into exit status 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlspy.ds.limits import Limits

ENV_PREFIX = "MLSPY_"
# MLSPY_* variables that are not settings of the server (so not typos worth a warning).
OTHER_ENV = frozenset({"MLSPY_DEBUG", "MLSPY_TEST_POSTGRES"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
REGISTRATION_MODES = ("invite", "open", "x509")
DAY = 86400.0


def default_database() -> str:
    return str(Path.home() / ".local" / "share" / "mlspy" / "ds.sqlite")


class ConfigError(ValueError):
    """A setting that cannot be used: unknown, wrongly typed or out of range."""


@dataclass(frozen=True)
class LogSettings:
    """``[log]``: what the server writes to stderr."""

    # debug | info | warning | error | critical
    level: str = "info"
    # json (one JSON object a line, for log collectors) | text (for people)
    format: str = "json"
    # One line per HTTP request and WebSocket (uvicorn's access log; query strings of
    # sensitive parameters are redacted).
    access_log: bool = True


def _ds_default(name: str, fallback: Any) -> Any:
    """The DeliveryService's own default for keyword ``name`` (one source of truth), or
    ``fallback`` where the DS has no such keyword."""
    from mlspy.ds.service import DeliveryService

    for f in dataclasses.fields(DeliveryService):
        if f.name == name and f.default is not dataclasses.MISSING:
            return f.default
    return fallback


@dataclass(frozen=True)
class QuotaSettings:
    """``[quotas]``: what one user may keep stored at the DS (``DeliveryService(quota_bytes=,
    quota_groups=, quota_key_packages=)``; more is refused)."""

    bytes: int = field(default_factory=lambda: int(_ds_default("quota_bytes", 256 << 20)))
    groups: int = field(default_factory=lambda: int(_ds_default("quota_groups", 1000)))
    key_packages: int = field(default_factory=lambda: int(_ds_default("quota_key_packages", 1000)))


@dataclass(frozen=True)
class Settings:
    """Everything ``mlspy serve`` runs with (top-level keys, then the tables)."""

    # Address to listen on. Loopback by default: give 0.0.0.0 / :: (or a public address)
    # to serve other machines, behind TLS or a TLS-terminating proxy.
    host: str = "127.0.0.1"
    port: int = 8080
    # SQLite file path, sqlite:///path, or postgresql://user:password@host/db (several nodes).
    database: str = field(default_factory=default_database)
    # PEM certificate chain and private key: the server speaks HTTPS/WSS itself.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Who may bind a new name: invite (single-use invite codes) | open (anyone; a local test
    # server only) | x509 (certificates issued by the CAs in `ca`).
    registration: str = "invite"
    # PEM file of trust anchors: X.509 credentials they issue are accepted.
    ca: str | None = None
    # Cipher suites devices, KeyPackages and groups may use (comma-separated numbers or
    # names, `mlspy suites`; "post-quantum" for every post-quantum one). Empty: all.
    cipher_suites: str | None = None
    # GET /metrics (Prometheus text format). Who may read it: loopback clients only, unless
    # a bearer token is set (then every client that sends it, and no other) or
    # metrics_public (anyone who reaches the port).
    metrics: bool = True
    # Bearer token Prometheus sends (`authorization: credentials` in prometheus.yml).
    metrics_token: str | None = None
    # File holding that token (a container secret), instead of metrics_token.
    metrics_token_file: str | None = None
    # Serve /metrics to anyone: only when the network already keeps it private.
    metrics_public: bool = False
    # Seconds between two retention sweeps (deleting what `retention` says).
    sweep_interval: float = 300.0
    # The largest message, Welcome or GroupInfo accepted, in bytes (an HTTP body may be three
    # times that). Post-quantum groups need more than classical ones (docs/performance.md).
    max_message: int = field(default_factory=lambda: int(_ds_default("max_message", 4 << 20)))
    # Seconds an unacknowledged message is kept (acknowledged ones go at once).
    retention: float = field(default_factory=lambda: float(_ds_default("retention", 30 * DAY)))
    # Connections (and requests in progress) at once, over all clients; more are answered 503.
    max_connections: int = 2000
    # Server processes sharing the port (and the database): one per core uses the machine.
    # Limits, caches and /metrics are per process.
    workers: int = 1
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto headers are
    # believed (comma-separated IPs or networks, or "*"): the per-address limits count the
    # client behind the proxy, not the proxy.
    forwarded_allow_ips: str = "127.0.0.1"
    log: LogSettings = field(default_factory=LogSettings)
    limits: Limits = field(default_factory=Limits)
    quotas: QuotaSettings = field(default_factory=QuotaSettings)


SECTIONS: dict[str, type[Any]] = {
    "log": LogSettings,
    "limits": Limits,
    "quotas": QuotaSettings,
}
# Settings whose values are secret in part (shown masked by --print-config).
SECRET_URLS = ("database",)
# Settings that are secret whole.
SECRETS = ("metrics_token",)


# --- Reading ---------------------------------------------------------------------------------


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalars(cls: type[Any]) -> dict[str, Any]:
    """The fields of ``cls`` that are settings (not sub-tables), with their types."""
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in SECTIONS}


def settings_table() -> list[tuple[str, str, str, Any]]:
    """(TOML key, environment variable, type, default) of every setting, in order."""
    rows = []
    defaults = Settings()
    for name, kind in _scalars(Settings).items():
        rows.append((name, env_name("", name), type_name(kind), getattr(defaults, name)))
    for section, cls in SECTIONS.items():
        sub = getattr(defaults, section)
        for name, kind in _scalars(cls).items():
            rows.append(
                (f"{section}.{name}", env_name(section, name), type_name(kind), getattr(sub, name))
            )
    return rows


def env_name(section: str, key: str) -> str:
    return ENV_PREFIX + (f"{section}_{key}" if section else key).upper()


def type_name(kind: Any) -> str:
    optional = _optional(kind)
    base = optional or kind
    name = {bool: "boolean", int: "integer", float: "number", str: "string"}[base]
    return f"{name} (optional)" if optional else name


def _optional(kind: Any) -> Any:
    """``T`` for ``T | None``, else None."""
    if isinstance(kind, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0]
    return None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` (from TOML) as ``kind``, or a ConfigError that says what is expected."""
    base = _optional(kind) or kind
    if value is None and _optional(kind):
        return None
    # TOML has no null: an empty string switches an optional setting off.
    if value == "" and _optional(kind):
        return None
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{where}: expected {type_name(kind)}, got {value!r}")
    return float(value) if base is float else value


def _parse_env(text: str, kind: Any, where: str) -> Any:
    """An environment variable's text as ``kind``."""
    base = _optional(kind) or kind
    if text == "" and _optional(kind):
        return None
    try:
        if base is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {type_name(kind)}, got {text!r}") from None
    return text


def _from_mapping(cls: type[Any], data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Checked values of ``cls``'s settings from one TOML table."""
    known = _scalars(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and cls is Settings:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a table [{key}], got {value!r}")
            out[key] = _from_mapping(SECTIONS[key], value, f"{where}{key}.")
            continue
        if key not in known:
            expected = ", ".join(sorted(set(known) | (set(SECTIONS) if cls is Settings else set())))
            raise ConfigError(f"{where}{key}: unknown setting (known here: {expected})")
        out[key] = _coerce(value, known[key], f"{where}{key}")
    return out


def read_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file (checked), as nested dicts of overrides."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _from_mapping(Settings, data, f"{path}: ")


def read_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Overrides from ``MLSPY_*`` variables, and the names of unknown ``MLSPY_*`` ones."""
    out: dict[str, Any] = {}
    known: set[str] = set(OTHER_ENV)
    for key, kind in _scalars(Settings).items():
        name = env_name("", key)
        known.add(name)
        if name in environ:
            out[key] = _parse_env(environ[name], kind, name)
    for section, cls in SECTIONS.items():
        for key, kind in _scalars(cls).items():
            name = env_name(section, key)
            known.add(name)
            if name in environ:
                out.setdefault(section, {})[key] = _parse_env(environ[name], kind, name)
    unknown = sorted(n for n in environ if n.startswith(ENV_PREFIX) and n not in known)
    return out, unknown


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict):
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Settings, list[str]]:
    """The effective settings: defaults < file ``path`` < ``environ`` < ``overrides`` (the
    command line; ``None`` values mean "not given"). Also returns warnings to show the
    operator (unknown ``MLSPY_*`` variables)."""
    layered: dict[str, Any] = read_file(path) if path is not None else {}
    env, unknown = read_env(os.environ if environ is None else environ)
    layered = _merge(layered, env)
    given: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            given.setdefault(section, {})[sub] = value
        else:
            given[key] = value
    layered = _merge(layered, given)
    sections = {name: cls(**layered.pop(name, {})) for name, cls in SECTIONS.items()}
    settings = Settings(**layered, **sections)
    check(settings)
    warnings = [
        f"{name} is not a setting of mlspy serve (ignored); see `mlspy serve --help`"
        for name in unknown
    ]
    return settings, warnings


# --- Checking --------------------------------------------------------------------------------


def allowed_suites(text: str | None) -> frozenset[int] | None:
    """The ``cipher_suites`` setting as suite values (None: every one)."""
    from mlspy.crypto.pq_suites import PQ_SUITES
    from mlspy.crypto.suite import parse_suite

    if text is None or not text.strip():
        return None
    out: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if item.lower() == "post-quantum":
            out |= set(PQ_SUITES)
            continue
        try:
            out.add(parse_suite(item))
        except ValueError as exc:
            raise ConfigError(
                f'cipher_suites: {exc}; "post-quantum" stands for all the post-quantum ones'
            ) from None
    return frozenset(out)


def check(s: Settings) -> None:
    """Values that are well typed but cannot work together, or out of range."""
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"port: expected 0..65535, got {s.port}")
    if s.registration not in REGISTRATION_MODES:
        raise ConfigError(
            f"registration: expected one of {', '.join(REGISTRATION_MODES)}, got {s.registration!r}"
        )
    if s.registration == "x509" and not s.ca:
        raise ConfigError(
            "registration 'x509' needs ca: the CA's certificates (--ca, MLSPY_CA or `ca` in "
            "the configuration file)"
        )
    if s.cipher_suites is not None:
        allowed_suites(s.cipher_suites)  # a ConfigError names what is wrong
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("tls_cert and tls_key go together (--tls-cert and --tls-key)")
    if s.metrics_token is not None and s.metrics_token_file is not None:
        raise ConfigError("metrics_token and metrics_token_file: give one of them")
    if s.metrics_token is not None and not s.metrics_token.strip():
        raise ConfigError("metrics_token: expected a non-empty token")
    for key in ("tls_cert", "tls_key", "ca", "metrics_token_file"):
        value = getattr(s, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"{key}: no such file: {value}")
    if s.log.level.lower() not in LOG_LEVELS:
        raise ConfigError(
            f"log.level: expected one of {', '.join(LOG_LEVELS)}, got {s.log.level!r}"
        )
    if s.log.format not in LOG_FORMATS:
        raise ConfigError(
            f"log.format: expected one of {', '.join(LOG_FORMATS)}, got {s.log.format!r}"
        )
    positive = [("sweep_interval", s.sweep_interval), ("retention", s.retention)]
    positive.append(("max_connections", s.max_connections))
    positive.append(("workers", s.workers))
    for section in SECTIONS:
        sub = getattr(s, section)
        positive += [(f"{section}.{f.name}", getattr(sub, f.name)) for f in dataclasses.fields(sub)]
    for key, value in positive:
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{key}: expected a number above 0, got {value}")
    if not s.database:
        raise ConfigError("database: expected a SQLite path or a postgresql:// URL")


def metrics_token(s: Settings) -> str | None:
    """The /metrics bearer token: ``metrics_token``, or the first line of
    ``metrics_token_file`` (which must not be empty)."""
    if s.metrics_token_file is None:
        return s.metrics_token
    token = Path(s.metrics_token_file).read_text().strip()
    if not token:
        raise ConfigError(f"metrics_token_file: {s.metrics_token_file} is empty")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- Showing ---------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` with its password (and any password=/sslpassword= parameter) replaced."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    query = re.sub(r"((?:^|&)[a-z]*password=)[^&]*", r"\1***", parts.query, flags=re.IGNORECASE)
    return urlunsplit(parts._replace(query=query))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def to_toml(s: Settings) -> str:
    """The settings as a TOML file that :func:`read_file` reads back; secrets masked; unset
    optional settings as comments."""
    lines = ["# mlspy serve: effective configuration (secrets masked)"]

    def emit(obj: Any, names: dict[str, Any]) -> None:
        for name in names:
            value = getattr(obj, name)
            if name in SECRET_URLS:
                value = mask_url(value)
            if name in SECRETS and value is not None:
                value = "***"
            if value is None:
                lines.append(f"# {name} = (not set)")
            else:
                lines.append(f"{name} = {_toml_value(value)}")

    emit(s, _scalars(Settings))
    for section, cls in SECTIONS.items():
        lines += ["", f"[{section}]"]
        emit(getattr(s, section), _scalars(cls))
    return "\n".join(lines) + "\n"


__all__ = [
    "ConfigError",
    "LogSettings",
    "QuotaSettings",
    "Settings",
    "default_database",
    "is_loopback",
    "load",
    "mask_url",
    "metrics_token",
    "read_env",
    "read_file",
    "settings_table",
    "to_toml",
]
