"""Content-addressed storage: digests (BLAKE3, SHA-256), the on-disk store, the action cache.

No gRPC or protobuf here: the services and remote clients are in ``distbuild/reapi``.
"""

from __future__ import annotations

from distbuild.cas.store import LocalCAS
from distbuild.config import Config


def local_cas(cfg: Config) -> LocalCAS:
    """The local on-disk store with the configured size cap."""
    return LocalCAS(cfg.cas_dir, cfg.cache.max_size, cfg.cache.gc_target)
