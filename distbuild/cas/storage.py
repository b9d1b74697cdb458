"""One CAS and one action cache per digest function, side by side under one directory.

What a server that accepts both SHA-256 and BLAKE3 requests (the scheduler) keeps: a blob
named by its SHA-256 is a different entry from the same bytes named by their BLAKE3 hash, and
an action digest only means something with the function that produced it. Layout under
``root``: ``cas/`` and ``ac/`` for BLAKE3 (the layout before SHA-256 existed), ``sha256/cas``
and ``sha256/ac`` for SHA-256.
"""

from __future__ import annotations

from pathlib import Path

from distbuild.cas.action_cache import ActionCache
from distbuild.cas.digest import BLAKE3, DigestFunction
from distbuild.cas.store import LocalCAS


class ContentStores:
    """A ``LocalCAS`` and an ``ActionCache`` for each digest function."""

    def __init__(self, root: str | Path, max_size: int = 10 << 30, gc_target: float = 0.8,
                 blake3_cas: LocalCAS | None = None):
        """``blake3_cas``: an existing BLAKE3 store to serve (the master's own, embedded)."""
        self.root = Path(root)
        self._cas: dict[DigestFunction, LocalCAS] = {}
        self._ac: dict[DigestFunction, ActionCache] = {}
        for function in DigestFunction:
            base = self.root if function is BLAKE3 else self.root / function.value
            cas = blake3_cas if (function is BLAKE3 and blake3_cas is not None) else \
                LocalCAS(base / "cas", max_size, gc_target, function)
            self._cas[function] = cas
            self._ac[function] = ActionCache(base / "ac", cas)

    def cas(self, function: DigestFunction = BLAKE3) -> LocalCAS:
        return self._cas[function]

    def ac(self, function: DigestFunction = BLAKE3) -> ActionCache:
        return self._ac[function]

    def all_cas(self) -> list[LocalCAS]:
        return list(self._cas.values())

    def all_ac(self) -> list[ActionCache]:
        return list(self._ac.values())
