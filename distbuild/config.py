"""config.toml -> frozen dataclasses.

Where settings come from, last wins:
  1. the defaults below (the same values the repository's ``config.toml`` documents);
  2. the file named by ``DISTBUILD_CONFIG``, else ``$DISTBUILD_HOME/config.toml`` if present;
  3. environment overrides: ``DISTBUILD_HOME`` (all local state), ``DISTBUILD_SCHEDULER``
     (``host:port``, sets ``scheduler.addr``), ``DISTBUILD_TOKEN`` (``auth.token``),
     ``DISTBUILD_CACHE_SIZE`` (``cache.max_size``), ``DISTBUILD_REMOTE`` (``remote.endpoint``).

Every value is checked when the file is loaded (type, range, choices, that TLS files exist),
and an error names the file, the section and the key. Each key's rule sits beside its default
(``_key``); ``config.toml`` in the repository documents every key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from distbuild.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: str | int) -> int:
    """Parse ``"10 GiB"``, ``"512M"`` or a plain integer into bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(f"not a size: {value!r} (use e.g. '10 GiB', '512 MiB', 1048576)")
    unit = (m.group(2) or "").upper()[:1]
    return int(float(m.group(1)) * _UNITS[unit])


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """``DISTBUILD_HOME`` or ``$XDG_CACHE_HOME/cargo-distbuild``."""
    env = os.environ if env is None else env
    home = env.get("DISTBUILD_HOME")
    if home:
        return Path(home).expanduser().absolute()
    xdg = env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "cargo-distbuild"



EXECUTION_MODES = ("embedded", "sandboxed", "direct")  # master.execution
EXECUTORS = ("local", "docker", "wasm")  # worker.executor (a comma list), scheduler.executor

Check = Callable[[Any], str]  # "" when the value is fine, else what is wrong with it


def _key(default: Any, check: Check | None = None, size: bool = False) -> Any:
    """A config field: its default, the rule its value must follow, and whether it is a size
    (``"10 GiB"`` or a number of bytes)."""
    return field(default=default, metadata={"check": check, "size": size})


def _positive(v: float) -> str:
    return "" if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str:
    return "" if v >= 0 else "must be 0 or more"


def _fraction(v: float) -> str:
    return "" if 0 < v <= 1 else "must be in (0, 1]"


def _at_least_one(v: int) -> str:
    return "" if v >= 1 else "must be at least 1"


def _one_of(*choices: str) -> Check:
    return lambda v: "" if v in choices else f"must be one of {', '.join(choices)}"


def _executor_list(v: str) -> str:
    kinds = [k.strip() for k in v.split(",")]
    bad = [k for k in kinds if k not in EXECUTORS]
    return (f"names unknown executor(s) {', '.join(map(repr, bad))} (known: "
            f"{', '.join(EXECUTORS)})") if bad else ""


def _address(v: str) -> str:
    """Empty, ``host:port`` or a gRPC target URI (``dns:///...``, ``unix:...``)."""
    if not v or "://" in v or v.startswith("unix:"):
        return ""
    host, _, port = v.rpartition(":")
    if host and port.isdigit() and 0 < int(port) < 65536:
        return ""
    return "must be host:port (e.g. 10.0.0.5:7000)"


def _existing_file(v: str) -> str:
    return "" if not v or os.path.isfile(os.path.expanduser(v)) else f"{v} does not exist"


def _memory(v: str) -> str:
    try:
        return "" if parse_size(v) > 0 else "must be greater than 0"
    except ConfigError:
        return "must be a size such as '4g' or '512 MiB'"


@dataclass(frozen=True)
class CacheConfig:
    max_size: int = _key(10 << 30, _positive, size=True)  # local CAS cap; LRU blobs go first
    gc_target: float = _key(0.8, _fraction)  # after a gc the store holds this much of max_size


@dataclass(frozen=True)
class MasterConfig:
    jobs: int = _key(0, _non_negative)  # concurrent local rustc processes; 0 = number of CPUs
    idle_timeout: float = _key(3 * 3600.0, _positive)  # the daemon exits after this long idle
    request_timeout: float = _key(3600.0, _positive)  # the shim runs rustc itself after this
    # Without a scheduler, misses run on an in-process scheduler + local worker ("embedded",
    # the same path as a cluster build) or straight in place ("direct": keeps rustc's
    # incremental state for workspace members, no sandbox).
    execution: str = _key("embedded", _one_of(*EXECUTION_MODES))


@dataclass(frozen=True)
class SchedulerConfig:
    addr: str = _key("", _address)  # host:port of a remote scheduler; "" = embedded execution
    heartbeat_interval: float = _key(2.0, _positive)
    heartbeat_timeout: float = _key(10.0, _positive)  # a worker silent this long is lost
    max_attempts: int = _key(3, _at_least_one)  # runs per job (retries only for infrastructure)
    job_timeout: float = _key(1800.0, _positive)
    # The executor remote jobs ask for; "docker" ships the client's toolchain.
    executor: str = _key("local", _one_of(*EXECUTORS))
    # A scheduler (or its CAS) that answers nothing for this long, a call in flight or an idle
    # connection alike, is given up on: the compile runs locally and counts a fallback.
    unresponsive_timeout: float = _key(5.0, _positive)


@dataclass(frozen=True)
class WorkerConfig:
    capacity: int = _key(0, _non_negative)  # concurrent jobs; 0 = number of CPUs
    executor: str = _key("local", _executor_list)  # local | docker | wasm, or a comma list
    cache_max_size: int = _key(5 << 30, _positive, size=True)
    memory_limit: str = _key("4g", _memory)  # docker/wasm memory cap per action
    cpu_limit: float = _key(0.0, _non_negative)  # docker CPUs per action; 0 = unlimited
    pids_limit: int = _key(512, _non_negative)  # docker processes per action; 0 = unlimited
    # Wasm instructions per action unless the action asks for less.
    wasm_fuel: int = _key(100_000_000_000, _positive)


@dataclass(frozen=True)
class RemoteConfig:
    """An existing REAPI farm (BuildGrid, Buildbarn, NativeLink, BuildBuddy) that runs the
    master's misses (docs/reapi.md)."""

    # host:port of the farm's Execution/CAS services; "" = no farm
    endpoint: str = _key("", _address)
    instance: str = ""  # the farm's instance name
    # auto: BLAKE3 when the farm offers it, else SHA-256 (Capabilities decides)
    digest_function: str = _key("auto", _one_of("auto", "blake3", "sha256"))


@dataclass(frozen=True)
class AuthConfig:
    token: str = ""  # shared secret sent as gRPC metadata; empty = no auth
    tls_cert: str = _key("", _existing_file)  # PEM: serve TLS with cert + key
    tls_key: str = _key("", _existing_file)
    tls_ca: str = _key("", _existing_file)  # PEM: verify servers against this CA

@dataclass(frozen=True)
class Config:
    home: Path = field(default_factory=default_home)
    cache: CacheConfig = field(default_factory=CacheConfig)
    master: MasterConfig = field(default_factory=MasterConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)

    @property
    def cas_dir(self) -> Path:
        return self.home / "cas"

    @property
    def socket_path(self) -> Path:
        return self.home / "master.sock"


SECTIONS: dict[str, type] = {"cache": CacheConfig, "master": MasterConfig,
                             "scheduler": SchedulerConfig, "worker": WorkerConfig,
                             "auth": AuthConfig, "remote": RemoteConfig}


def _value(f: Any, value: Any, where: str) -> Any:
    """``value`` for field ``f``, converted and checked; ConfigError naming ``where``."""
    default = f.default
    if f.metadata.get("size") and isinstance(value, str):
        try:
            value = parse_size(value)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    # bool is an int to Python, never to us: `max_size = true` is not one byte.
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
            value, type(default)):
        kind = "a size" if f.metadata.get("size") else {
            int: "an integer", float: "a number", str: "a string", bool: "true or false",
        }.get(type(default), type(default).__name__)
        raise ConfigError(f"{where} must be {kind}, not {value!r}")
    check = f.metadata.get("check")
    problem = check(value) if check else ""
    if problem:
        raise ConfigError(f"{where} {problem} (got {value!r})")
    return value


def _section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table ([section] with keys), not {data!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        kwargs[key] = _value(known[key], value, f"{where} {key}")
    if cls is AuthConfig and bool(kwargs.get("tls_cert")) != bool(kwargs.get("tls_key")):
        raise ConfigError(f"{where}: tls_cert and tls_key go together (set both or neither)")
    return cls(**kwargs)


# Environment variables that override a key: (variable, section, key).
OVERRIDES = (("DISTBUILD_SCHEDULER", "scheduler", "addr"), ("DISTBUILD_TOKEN", "auth", "token"),
             ("DISTBUILD_CACHE_SIZE", "cache", "max_size"),
             ("DISTBUILD_REMOTE", "remote", "endpoint"))


def config_path(home: Path, env: Mapping[str, str] | None = None, cwd: str = "") -> Path:
    """The config file ``env`` names (``DISTBUILD_CONFIG``, relative to ``cwd``), else
    ``<home>/config.toml``."""
    named = (os.environ if env is None else env).get("DISTBUILD_CONFIG")
    if not named:
        return home / "config.toml"
    path = Path(named).expanduser()
    return path if path.is_absolute() else Path(cwd or os.getcwd()) / path


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); TOML files are UTF-8") from e
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def load_config(env: Mapping[str, str] | None = None, cwd: str = "",
                home: Path | None = None) -> Config:
    """Load the effective configuration (defaults, file, environment overrides).

    ``env`` and ``cwd`` default to this process's; the master passes a request's (a shim's
    environment names the configuration its build wants). ``home`` overrides
    ``DISTBUILD_HOME``.
    """
    env = os.environ if env is None else env
    home = home or default_home(env)
    path = config_path(home, env, cwd)
    data: dict[str, Any] = {}
    if path.is_file():
        data = _read(path)
    elif env.get("DISTBUILD_CONFIG"):
        raise ConfigError(f"DISTBUILD_CONFIG names {path}, which does not exist")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)} "
                          f"(known: {', '.join(SECTIONS)})")
    parts = {name: _section(cls, data.get(name, {}), f"{path} [{name}]")
             for name, cls in SECTIONS.items()}
    cfg = Config(home=home, **parts)
    for var, section, key in OVERRIDES:
        value = env.get(var)
        if value is None or (not value and var != "DISTBUILD_SCHEDULER"):
            continue
        part = getattr(cfg, section)
        f = next(f for f in fields(part) if f.name == key)
        cfg = replace(cfg, **{section: replace(part, **{key: _value(f, value, var)})})
    return cfg


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
