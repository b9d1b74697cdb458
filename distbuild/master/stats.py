"""Counters of what the master did, persisted in ``<home>/stats.json``, in total and per build.

Each compile request fills a ``Tally`` of its own and the master applies it with ``commit``
when the request is answered, under one lock: a request in flight counts nothing, so the
counters agree with one another whenever they are read or saved, and after a crash
(``cache_hits + cache_misses + sum(not_cacheable) == compile_requests`` and
``executed_local + executed_remote == cache_misses``).

A request that carries ``DISTBUILD_BUILD_ID`` (``cargo distbuild build`` sets it) is also
counted under that build, so a summary reports its own compilations however many builds
share the master. The most recent ``KEEP_BUILDS`` builds are kept (and saved).

Fallbacks taken by the shim when the master was unreachable cannot be counted by the master:
the shim appends one byte to ``<home>/fallbacks`` (and to ``<home>/builds/<id>.fallbacks``
within a build) and the file's size is added here, as the reason ``master-unreachable``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COUNTERS = ("compile_requests", "cache_hits", "cache_misses", "executed_local",
            "executed_remote", "fallbacks", "passthrough", "corrupt_blobs")
FLOATS = ("time_saved_s", "compile_time_s")
# Reason -> count tables: compilations never looked up (refused by the argument table or an
# unreadable input), misses whose result could not be stored, and why the master compiled a
# miss locally instead of as planned.
REASONS = ("not_cacheable", "not_stored", "fallback_reasons")
BUILD_ID_VAR = "DISTBUILD_BUILD_ID"
KEEP_BUILDS = 64
SHIM_FALLBACK = "master-unreachable"
_BUILD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def valid_build_id(build_id: str) -> bool:
    """Build ids name files (``builds/<id>.fallbacks``): letters, digits, ``-`` and ``_``."""
    return bool(_BUILD_ID.match(build_id))


@dataclass
class Tally:
    """What one request did, applied to the counters all at once (``Stats.commit``)."""

    counts: Counter[str] = field(default_factory=Counter)
    times: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in REASONS})

    def incr(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def add_time(self, name: str, seconds: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + seconds

    def not_cacheable(self, reason: str) -> None:
        self.reasons["not_cacheable"][reason] += 1

    def not_stored(self, reason: str) -> None:
        self.reasons["not_stored"][reason] += 1

    def fallback(self, reason: str) -> None:
        self.counts["fallbacks"] += 1
        self.reasons["fallback_reasons"][reason] += 1


def empty_counters() -> dict[str, Any]:
    data: dict[str, Any] = {name: 0 for name in COUNTERS}
    data.update({name: 0.0 for name in FLOATS})
    data.update({name: {} for name in REASONS})
    return data


def _apply(data: dict[str, Any], tally: Tally) -> None:
    for name, n in tally.counts.items():
        data[name] = data.get(name, 0) + n
    for name, seconds in tally.times.items():
        data[name] = data.get(name, 0.0) + seconds
    for table, counts in tally.reasons.items():
        into = data.setdefault(table, {})
        for reason, n in counts.items():
            into[reason] = into.get(reason, 0) + n


class Stats:
    def __init__(self, home: Path):
        self._home = home
        self._file = home / "stats.json"
        self._fallbacks = home / "fallbacks"
        self._lock = threading.Lock()
        self._builds: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._data = self._load()
        self._changes = 0  # bumped by every update; save() writes only when it moved
        self._saved_at = 0

    def _load(self) -> dict[str, Any]:
        data = empty_counters()
        try:
            saved = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return data
        if isinstance(saved, dict):
            builds = saved.pop("builds", {})
            saved.pop("as_of", None)
            data.update(saved)
            if isinstance(builds, dict):
                self._builds.update(builds)
        return data

    def commit(self, tally: Tally, build_id: str = "") -> None:
        """Apply one request's tally to the totals and, with ``build_id``, to that build."""
        with self._lock:
            _apply(self._data, tally)
            if build_id:
                build = self._builds.get(build_id)
                if build is None:
                    build = self._builds[build_id] = empty_counters()
                    while len(self._builds) > KEEP_BUILDS:
                        self._builds.popitem(last=False)
                self._builds.move_to_end(build_id)
                _apply(build, tally)
            self._changes += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            data = json.loads(json.dumps(self._data))
        return with_shim_fallbacks(data, self._fallbacks)

    def build(self, build_id: str) -> dict[str, Any]:
        """One build's counters (all zero if it compiled nothing through this master), with
        the shim's fallbacks during it."""
        with self._lock:
            data = json.loads(json.dumps(self._builds.get(build_id) or empty_counters()))
        if not valid_build_id(build_id):
            return data
        return with_shim_fallbacks(data, self._home / "builds" / f"{build_id}.fallbacks")

    def save(self) -> None:
        """Persist the counters if they changed since the last save."""
        with self._lock:
            if self._changes == self._saved_at:
                return
            self._saved_at = self._changes
            text = json.dumps({**self._data, "builds": self._builds}, sort_keys=True)
        tmp = self._file.with_name(f".stats.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(text)
        os.replace(tmp, self._file)

    def zero(self) -> None:
        with self._lock:
            self._data = empty_counters()
            self._builds.clear()
            self._changes += 1
        try:
            self._fallbacks.unlink()
        except OSError:
            pass
        self.save()


def with_shim_fallbacks(data: dict[str, Any], fallbacks_file: Path) -> dict[str, Any]:
    """``data`` plus the shim's fallbacks counted in ``fallbacks_file`` (one byte each)."""
    try:
        n = fallbacks_file.stat().st_size
    except OSError:
        n = 0
    if n:
        data["fallbacks"] += n
        reasons = data.setdefault("fallback_reasons", {})
        reasons[SHIM_FALLBACK] = reasons.get(SHIM_FALLBACK, 0) + n
    data["as_of"] = time.time()
    return data


def read_stats(home: Path) -> dict[str, Any]:
    """Stats as last saved, for when no master is running."""
    return Stats(home).snapshot()
