"""The action cache: key -> ActionResult, next to a CAS that holds the outputs.

Keys are lowercase hex: an Action's digest hash (the scheduler, REAPI's meaning) or a cache
key computed by the master. An entry is only served while every blob it names is still in
the CAS (so an evicted output turns the entry into a miss instead of a broken download).
Entries are small JSON files written atomically.
"""

from __future__ import annotations

import threading
from pathlib import Path

from distbuild.actions import ActionResult
from distbuild.cas.digest import Digest
from distbuild.cas.store import LocalCAS
from distbuild.errors import InvalidRequest
from distbuild.fsutil import write_atomic


class ActionCache:
    def __init__(self, root: str | Path, cas: LocalCAS):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cas = cas
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _path(self, key: Digest | str) -> Path:
        hex_key = key.hash if isinstance(key, Digest) else key
        return self.root / hex_key[:2] / hex_key

    def get(self, key: Digest | str) -> ActionResult | None:
        """The cached result, or None on a miss (no entry, or an output blob is gone)."""
        try:
            result = ActionResult.from_json(self._path(key).read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            result = None
        if result is not None and self.cas.find_missing(_blobs(result)):
            result = None
        with self._lock:
            if result is None:
                self.misses += 1
            else:
                self.hits += 1
        return result

    def put(self, key: Digest | str, result: ActionResult) -> None:
        """Record ``result``; every blob it names must already be in the CAS."""
        missing = self.cas.find_missing(_blobs(result))
        if missing:
            raise InvalidRequest(
                f"action result names {len(missing)} blob(s) the CAS lacks, e.g. {missing[0]}")
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, [result.to_json()])


def _blobs(result: ActionResult) -> list[Digest]:
    """The blobs an entry needs; the empty blob always exists (REAPI: clients need not upload
    it, and do not)."""
    blobs = [o.digest for o in result.output_files]
    blobs += [o.tree_digest for o in result.output_directories]  # (not the files in them)
    blobs += [d for d in (result.stdout_digest, result.stderr_digest) if d is not None]
    return [d for d in blobs if d.size]
