"""The wasm engine settings and the compiled-module cache (memory, then disk, then compile).

A serialized module is native code: loading one produced by another wasmtime version or another
engine configuration is undefined behaviour, and loading one we did not write is worse. So:

* the disk key hashes the module's digest, the wasmtime version, the machine and every engine
  setting (``ENGINE_SETTINGS`` is the single source of both the Config and the key);
* each file carries a magic string and the BLAKE3 of its payload, checked before
  ``Module.deserialize``; a file that fails is deleted and the module recompiled;
* files are written to a temp name and renamed, so readers never see half a file.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import wasmtime

from distbuild.cas.digest import Digest

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout or the key changes
_MAGIC = b"distbuild-cwasm\x00"

# Everything that changes generated code. Determinism: NaNs canonicalized, no threads,
# relaxed SIMD pinned to its deterministic lowering.
ENGINE_SETTINGS: dict[str, bool | str] = {
    "consume_fuel": True,
    "epoch_interruption": True,
    "cranelift_nan_canonicalization": True,
    "cranelift_opt_level": "speed",
    "wasm_threads": False,
    "wasm_relaxed_simd_deterministic": True,
}


def wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def make_engine() -> wasmtime.Engine:
    """A new engine configured from ``ENGINE_SETTINGS``."""
    cfg = wasmtime.Config()
    for name, value in ENGINE_SETTINGS.items():
        setattr(cfg, name, value)
    return wasmtime.Engine(cfg)


def engine_fingerprint() -> str:
    """Identifies generated code: cache format, wasmtime version, machine, engine settings."""
    return json.dumps(
        {"format": CACHE_FORMAT, "wasmtime": wasmtime_version(), "machine": platform.machine(),
         "settings": ENGINE_SETTINGS},
        sort_keys=True,
    )


@dataclass
class CachedModule:
    module: wasmtime.Module
    source: str  # "memory" | "disk" | "compiled"
    compile_s: float = 0.0


@dataclass
class ModuleCache:
    """Compiled modules on disk under ``root``, shared by every engine of one configuration."""

    root: Path
    fingerprint: str = field(default_factory=engine_fingerprint)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def key(self, module: Digest) -> str:
        return blake3.blake3(f"{self.fingerprint}\n{module}".encode()).hexdigest()

    def path(self, module: Digest) -> Path:
        return self.root / f"{self.key(module)}.cwasm"

    def load(self, engine: wasmtime.Engine, module: Digest) -> wasmtime.Module | None:
        """The cached compiled module, or None (missing, damaged or refused by wasmtime)."""
        path = self.path(module)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        magic, checksum, payload = _split(data)
        if magic != _MAGIC or blake3.blake3(payload).digest() != checksum:
            log.warning("compiled-module cache file %s is damaged; recompiling", path)
            self._discard(path)
            return None
        try:
            return wasmtime.Module.deserialize(engine, payload)
        except wasmtime.WasmtimeError as e:
            log.warning("wasmtime refused cached module %s (%s); recompiling", path, e)
            self._discard(path)
            return None

    def save(self, module: Digest, compiled: wasmtime.Module) -> None:
        """Store a compiled module; failures only cost a recompilation later."""
        payload = compiled.serialize()
        data = _MAGIC + blake3.blake3(payload).digest() + payload
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path(module))
        except OSError as e:
            log.warning("could not cache compiled module %s: %s", module, e)

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


def _split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A cache file's magic string, payload checksum and payload."""
    head = len(_MAGIC) + 32
    return data[: len(_MAGIC)], data[len(_MAGIC):head], data[head:]
