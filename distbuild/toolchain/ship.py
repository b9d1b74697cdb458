"""The client side of shipped toolchains: package once, upload once, name it in the action.

``RemoteRunner`` calls :func:`ship_toolchain` for actions that go to docker workers; the
returned digest is the value of the action's ``toolchain`` platform property (so it is part of
the action key, and docker workers, which offer ``toolchain=*``, accept it). The archive is kept
in the client's local CAS and uploaded to the scheduler's CAS the first time, under a lock, so
cargo's parallel first compilations do not each send it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.config import Config
from distbuild.toolchain.package import Toolchain, ensure_toolchain


class Uploader(Protocol):
    def upload(self, blobs: dict[Digest, bytes | Path]) -> int: ...


@dataclass(frozen=True)
class Shipped:
    toolchain: Toolchain
    path: Path  # the archive in the client's local CAS

    @property
    def blobs(self) -> dict[Digest, bytes | Path]:
        """Add these to the action's blobs: re-sent if the remote CAS evicted the archive."""
        return {self.toolchain.digest: self.path}


_stores: dict[Path, LocalCAS] = {}
_uploaded: set[tuple[int, Digest]] = set()
_lock = threading.Lock()


def ship_toolchain(rustc: str, cfg: Config, remote: Uploader,
                   env: Mapping[str, str] | None = None, cwd: str | None = None) -> Shipped:
    """Package ``rustc``'s toolchain (memoized) and make sure ``remote`` holds it.

    Raises:
        ExecutorUnavailable: the toolchain cannot be packaged.
        RemoteError: the upload failed.
    """
    with _lock:
        store = _stores.get(cfg.cas_dir)
        if store is None:
            store = _stores[cfg.cas_dir] = LocalCAS(cfg.cas_dir, cfg.cache.max_size,
                                                   cfg.cache.gc_target)
    tc = ensure_toolchain(rustc, store, cfg.home / "toolchains", env=env, cwd=cwd)
    shipped = Shipped(tc, store.path_of(tc.digest))
    key = (id(remote), tc.digest)
    if key not in _uploaded:
        with _lock:  # one upload of a few hundred MB, not one per parallel compile
            if key not in _uploaded:
                remote.upload(shipped.blobs)
                _uploaded.add(key)
    return shipped
