"""An executable restored from the CAS is never "busy" (ETXTBSY) because a child was being
started at the same moment in another thread."""

from __future__ import annotations

import errno
import subprocess
import threading
import time
from pathlib import Path

from distbuild.cas.store import LocalCAS
from distbuild.spawnlock import SPAWN_LOCK


def test_restored_executables_run_while_children_start(tmp_path: Path) -> None:
    """One thread keeps starting children that take a while to exec (as a loaded machine
    makes any child); another restores an executable and runs it at once, 60 times: it
    always runs, none is held open for writing by a child being started."""
    cas = LocalCAS(tmp_path / "cas")
    script = b"#!/bin/sh\nexit 0\n" + b"#" * (4 << 20) + b"\n"  # takes a moment to copy
    digest = cas.put_bytes(script)
    stop = threading.Event()

    def start_children() -> None:
        while not stop.is_set():
            with SPAWN_LOCK.spawning():  # as every spawn in the master and workers does
                child = subprocess.Popen(["/bin/true"], preexec_fn=lambda: time.sleep(0.01))
            child.wait()

    spawner = threading.Thread(target=start_children)
    spawner.start()
    busy = 0
    try:
        for i in range(60):
            dest = tmp_path / f"build-script-{i}"
            cas.copy_to(digest, dest, 0o755)
            try:
                subprocess.run([str(dest)], check=True)
            except OSError as e:
                assert e.errno == errno.ETXTBSY, e
                busy += 1
    finally:
        stop.set()
        spawner.join(30)
    assert busy == 0, f"{busy} executables were busy (of 60)"
