"""No Python traceback reaches a user: bad input, a closed pipe, a stray file in the store."""

from __future__ import annotations

import subprocess
from pathlib import Path

from distbuild.cas.store import LocalCAS
from tests.conftest import CLI, Distbuild


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_cas_put_of_a_missing_file_or_a_directory(distbuild: Distbuild, tmp_path: Path) -> None:
    """`cas put` of a missing file or of a directory: one line naming it, exit code 1."""
    missing = distbuild.run("cas", "put", str(tmp_path / "nothere"), check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: No such file or directory: {tmp_path / 'nothere'}"
    directory = distbuild.run("cas", "put", str(tmp_path), check=False)
    assert directory.returncode == 1
    assert directory.stderr.strip() == f"error: Is a directory: {tmp_path}"
    _no_traceback(missing)
    _no_traceback(directory)


def test_cas_list_into_a_closed_pipe(distbuild: Distbuild) -> None:
    """`cas list --json | head -c 10`: the reader leaves early; we stop quietly with the
    status of a process killed by SIGPIPE (141), nothing on stderr."""
    cas = LocalCAS(distbuild.home / "cas")
    for i in range(3000):  # far more than a pipe buffer holds
        cas.put_bytes(b"blob %d" % i)
    proc = subprocess.Popen([CLI, "cas", "list", "--json"], env=distbuild.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == "[\n  {\n    "
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_stray_file_in_the_store(distbuild: Distbuild, tmp_path: Path) -> None:
    """A non-hash file under cas/ makes no command abort: list, verify and gc warn and go on."""
    src = tmp_path / "f"
    src.write_text("content")
    digest = distbuild.run("cas", "put", str(src)).stdout.strip()
    (distbuild.home / "cas" / "blobs" / "zz").mkdir()
    (distbuild.home / "cas" / "blobs" / "zz" / "notahash").write_text("stray")
    (distbuild.home / "cas" / "blobs" / "stray.txt").write_text("stray")
    listed = distbuild.run("cas", "list", "--json")
    assert digest in listed.stdout and "notahash" in listed.stderr
    verified = distbuild.run("cas", "verify", "--json")
    assert '"checked": 1' in verified.stdout
    gc = distbuild.run("cas", "gc", "--json")
    assert '"removed": 0' in gc.stdout
    for proc in (listed, verified, gc):
        _no_traceback(proc)


def test_master_stop_removes_its_pid_file(distbuild: Distbuild) -> None:
    """`master stop` leaves no master.pid (nor socket) behind."""
    distbuild.run("master", "start")
    assert (distbuild.home / "master.pid").exists()
    assert distbuild.run("master", "stop").stdout.strip() == "master stopped"
    assert not (distbuild.home / "master.pid").exists()
    assert not (distbuild.home / "master.sock").exists()
