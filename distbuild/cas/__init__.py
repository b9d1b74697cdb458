"""Content-addressed storage: BLAKE3 digests, the on-disk store, and (remote) clients."""

from __future__ import annotations

from distbuild.cas.store import LocalCAS
from distbuild.config import Config


def local_cas(cfg: Config) -> LocalCAS:
    """The local on-disk store with the configured size cap."""
    return LocalCAS(cfg.cas_dir, cfg.cache.max_size, cfg.cache.gc_target)
