"""config.toml -> frozen dataclasses.

Where settings come from, last wins:
  1. the defaults below (the same values the repository's ``config.toml`` documents);
  2. the file named by ``DISTBUILD_CONFIG``, else ``$DISTBUILD_HOME/config.toml`` if present;
  3. environment overrides: ``DISTBUILD_HOME`` (all local state), ``DISTBUILD_SCHEDULER``
     (``host:port``, sets ``scheduler.addr``), ``DISTBUILD_TOKEN`` (``auth.token``),
     ``DISTBUILD_CACHE_SIZE`` (``cache.max_size``), ``DISTBUILD_REMOTE`` (``remote.endpoint``).
"""

from __future__ import annotations

import os
import re
import tomllib
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


def default_home() -> Path:
    """``DISTBUILD_HOME`` or ``$XDG_CACHE_HOME/cargo-distbuild``."""
    env = os.environ.get("DISTBUILD_HOME")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "cargo-distbuild"


@dataclass(frozen=True)
class CacheConfig:
    max_size: int = 10 << 30  # local CAS cap; least recently used blobs go first
    gc_target: float = 0.8  # after a gc the store holds at most this fraction of max_size


@dataclass(frozen=True)
class MasterConfig:
    jobs: int = 0  # concurrent local rustc processes; 0 = number of CPUs
    idle_timeout: float = 3 * 3600.0  # daemon exits after this long without requests
    request_timeout: float = 3600.0  # the shim falls back to plain rustc after this
    # Without a scheduler, misses run on an in-process scheduler + local worker ("embedded",
    # the same path as a cluster build) or straight in place ("direct": keeps rustc's
    # incremental state for workspace members, no sandbox).
    execution: str = "embedded"


@dataclass(frozen=True)
class SchedulerConfig:
    addr: str = ""  # host:port of a remote scheduler; empty = embedded (local) execution
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 10.0  # a worker silent this long is declared lost
    max_attempts: int = 3  # infrastructure retries per job (never for compile errors)
    job_timeout: float = 1800.0
    executor: str = "local"  # executor remote jobs ask for; "docker" ships the client's toolchain


@dataclass(frozen=True)
class WorkerConfig:
    capacity: int = 0  # concurrent jobs; 0 = number of CPUs
    executor: str = "local"  # local | docker | wasm
    cache_max_size: int = 5 << 30
    memory_limit: str = "4g"  # docker/wasm memory cap per action
    cpu_limit: float = 0.0  # docker CPUs per action; 0 = unlimited
    pids_limit: int = 512
    wasm_fuel: int = 100_000_000_000  # wasm instructions per action unless the action says less


REMOTE_DIGEST_FUNCTIONS = ("auto", "blake3", "sha256")


@dataclass(frozen=True)
class RemoteConfig:
    """An existing REAPI farm (BuildGrid, Buildbarn, NativeLink, BuildBuddy) that runs the
    master's misses (docs/reapi.md)."""

    endpoint: str = ""  # host:port of the farm's Execution/CAS services; "" = no farm
    instance: str = ""  # the farm's instance name
    # auto: BLAKE3 when the farm offers it, else SHA-256 (Capabilities decides)
    digest_function: str = "auto"


@dataclass(frozen=True)
class AuthConfig:
    token: str = ""  # shared secret sent as gRPC metadata; empty = no auth
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


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


_SIZE_KEYS = {"max_size", "cache_max_size"}


def _section(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if key in _SIZE_KEYS:
            value = parse_size(value)
        default = known[key].default
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if not isinstance(value, type(default)):
            raise ConfigError(
                f"{where}: {key} must be {type(default).__name__}, got {value!r}"
            )
        kwargs[key] = value
    return cls(**kwargs)


def config_path(home: Path) -> Path:
    env = os.environ.get("DISTBUILD_CONFIG")
    return Path(env).expanduser() if env else home / "config.toml"


def load_config() -> Config:
    """Load the effective configuration (defaults, file, environment)."""
    home = default_home()
    path = config_path(home)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: {e}") from e
    elif "DISTBUILD_CONFIG" in os.environ:
        raise ConfigError(f"DISTBUILD_CONFIG names {path}, which does not exist")
    sections = {"cache": CacheConfig, "master": MasterConfig, "scheduler": SchedulerConfig,
                "worker": WorkerConfig, "auth": AuthConfig, "remote": RemoteConfig}
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    parts = {name: _section(cls, data.get(name, {}), f"{path} [{name}]")
             for name, cls in sections.items()}
    cfg = Config(home=home, **parts)
    env = os.environ
    if env.get("DISTBUILD_SCHEDULER") is not None:
        cfg = replace(cfg, scheduler=replace(cfg.scheduler, addr=env["DISTBUILD_SCHEDULER"]))
    if env.get("DISTBUILD_TOKEN"):
        cfg = replace(cfg, auth=replace(cfg.auth, token=env["DISTBUILD_TOKEN"]))
    if env.get("DISTBUILD_CACHE_SIZE"):
        size = parse_size(env["DISTBUILD_CACHE_SIZE"])
        cfg = replace(cfg, cache=replace(cfg.cache, max_size=size))
    if env.get("DISTBUILD_REMOTE") is not None:
        cfg = replace(cfg, remote=replace(cfg.remote, endpoint=env["DISTBUILD_REMOTE"]))
    if cfg.remote.digest_function not in REMOTE_DIGEST_FUNCTIONS:
        raise ConfigError(f"remote.digest_function must be one of "
                          f"{', '.join(REMOTE_DIGEST_FUNCTIONS)}, not "
                          f"{cfg.remote.digest_function!r}")
    return cfg


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
