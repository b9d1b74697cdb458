"""A local error is not a cluster failure, and no compilation runs twice at once in place."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.conftest import (
    Distbuild,
    compile_spans,
    copy_workspace,
    counting_rustc,
    crate_names,
    run_app,
    slow_rustc,
)
from tests.conftest import tmpfs_mount as mount

pytestmark = pytest.mark.slow

FULL_BUILD = 8

def _fill(fs: Path) -> None:
    """Fill a filesystem to the last byte."""
    with open(fs / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


@pytest.mark.parametrize("execution", ["direct", "embedded"])
def test_full_cache_disk_compiles_each_crate_once(tmp_path: Path, plain_app_output: str,
                                                  execution: str) -> None:
    """With the CAS on a full tmpfs, every miss is compiled once and returned uncached: a
    failure to store a successful compile does not make the shim compile it again, and the
    embedded path's ENOSPC is a local error (fallback reason local-error), not a retried
    cluster failure."""
    db = Distbuild(tmp_path / "home")
    db.home.mkdir()
    (db.home / "config.toml").write_text(f'[master]\nexecution = "{execution}"\n')
    ws = copy_workspace(tmp_path / "ws")
    rustc, log = counting_rustc(tmp_path / "rustc")
    with mount(db.home / "cas", "1m") as cas:
        (cas / "blobs").mkdir()
        (cas / "tmp").mkdir()
        _fill(cas)
        try:
            db.cargo("build", cwd=ws, env={"RUSTC": str(rustc)})
            stats = db.stats()
        finally:
            db.stop()
    assert run_app(ws) == plain_app_output
    compiled = crate_names(log)
    assert sorted(compiled) == sorted(set(compiled)) and len(compiled) == FULL_BUILD, compiled
    assert stats["cache_misses"] == stats["executed_local"] == FULL_BUILD, stats
    assert stats["not_stored"] == {"store-failed": FULL_BUILD}, stats
    expected_fallbacks = {} if execution == "direct" else {"local-error": FULL_BUILD}
    assert stats["fallback_reasons"] == expected_fallbacks, stats


def test_lost_embedded_worker_never_overlaps_a_compile(tmp_path: Path,
                                                       plain_app_output: str) -> None:
    """The embedded scheduler declares its own worker lost while compiles run (a heartbeat
    timeout shorter than its lease poll): no compilation is re-run in place while an earlier
    run of it may still be writing, each runs at most twice, and the build is right."""
    db = Distbuild(tmp_path / "home")
    db.home.mkdir()
    (db.home / "config.toml").write_text(
        "[scheduler]\nheartbeat_interval = 30.0\nheartbeat_timeout = 1.0\n")
    ws = copy_workspace(tmp_path / "ws")
    rustc, log = slow_rustc(tmp_path / "slow-rustc", pause=3)
    try:
        db.cargo("build", cwd=ws, env={"RUSTC": str(rustc)})
    finally:
        db.stop()
    assert run_app(ws) == plain_app_output
    runs = compile_spans(log)
    assert len(runs) == FULL_BUILD, runs
    for crate, spans in runs.items():
        spans.sort()
        assert len(spans) <= 2, (crate, spans)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"{crate} ran twice at once: {spans}"
