"""Counters of what the master did, persisted in ``<home>/stats.json``.

Fallbacks taken by the shim when the master was unreachable cannot be counted by the master:
the shim appends one byte to ``<home>/fallbacks`` and the file's size is added here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

COUNTERS = ("compile_requests", "cache_hits", "cache_misses", "executed_local",
            "executed_remote", "fallbacks", "passthrough", "corrupt_blobs")
FLOATS = ("time_saved_s", "compile_time_s")


class Stats:
    def __init__(self, home: Path):
        self._file = home / "stats.json"
        self._fallbacks = home / "fallbacks"
        self._lock = threading.Lock()
        self._data = self._load()
        self._changes = 0  # bumped by every update; save() writes only when it moved
        self._saved_at = 0

    def _empty(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: 0 for name in COUNTERS}
        data.update({name: 0.0 for name in FLOATS})
        data["not_cacheable"] = {}
        return data

    def _load(self) -> dict[str, Any]:
        data = self._empty()
        try:
            data.update(json.loads(self._file.read_text()))
        except (OSError, ValueError):
            pass
        return data

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._data[name] += n
            self._changes += 1

    def add_time(self, name: str, seconds: float) -> None:
        with self._lock:
            self._data[name] += seconds
            self._changes += 1

    def not_cacheable(self, reason: str) -> None:
        with self._lock:
            nc = self._data["not_cacheable"]
            nc[reason] = nc.get(reason, 0) + 1
            self._changes += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data = json.loads(json.dumps(self._data))
        return with_shim_fallbacks(data, self._fallbacks)

    def save(self) -> None:
        """Persist the counters if they changed since the last save."""
        with self._lock:
            if self._changes == self._saved_at:
                return
            self._saved_at = self._changes
            text = json.dumps(self._data, sort_keys=True)
        tmp = self._file.with_name(f".stats.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(text)
        os.replace(tmp, self._file)

    def zero(self) -> None:
        with self._lock:
            self._data = self._empty()
            self._changes += 1
        try:
            self._fallbacks.unlink()
        except OSError:
            pass
        self.save()


def with_shim_fallbacks(data: dict[str, Any], fallbacks_file: Path) -> dict[str, Any]:
    try:
        data["fallbacks"] += fallbacks_file.stat().st_size
    except OSError:
        pass
    data["as_of"] = time.time()
    return data


def read_stats(home: Path) -> dict[str, Any]:
    """Stats as last saved, for when no master is running."""
    return Stats(home).snapshot()
