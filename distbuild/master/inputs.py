"""Which source files a rustc job reads, found before it runs: what its sandbox must hold.

Two ways, tried in this order:

* **the package** (``package_inputs``): every file under the crate's package directory
  (``CARGO_MANIFEST_DIR``), minus the target directory, hidden directories and nested
  packages. It costs a directory walk, no compiler run, and covers what rustc's dep-info
  misses too (files a proc-macro opens). It is a guess: a crate may read a file outside its
  package (``include_str!("../../README.md")``), so the caller must treat a compile that
  failed on a missing file as "inputs incomplete" and compile in place (``missed_input``).
  Packages above ``PACKAGE_MAX_FILES`` files or ``PACKAGE_MAX_BYTES`` bytes are not walked.
* **the probe** (``probe_inputs``): ``rustc --emit=dep-info`` without outputs, which parses
  and expands the crate once more. Exact, but it costs a compiler front-end pass per miss.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from distbuild import spawnlock
from distbuild.errors import RemoteError
from distbuild.master.runner import CompileJob
from distbuild.rustc.depinfo import parse_dep_info

PACKAGE_MAX_FILES = 5_000
PACKAGE_MAX_BYTES = 128 << 20
# What rustc (and proc-macros, through std::io) print when a file is not there.
_MISSING_FILE = (b"E0583", b"couldn't read", b"No such file or directory")


@dataclass
class Inputs:
    files: list[str]  # absolute paths
    dirs: list[str] = field(default_factory=list)  # directories to create even if empty
    exact: bool = True  # False: a guess, a compile may still miss a file


def missed_input(stderr: bytes) -> bool:
    """Whether a failed compile's diagnostics say a file was not found."""
    return any(marker in stderr for marker in _MISSING_FILE)


def package_inputs(job: CompileJob, exclude: Iterable[str] = ()) -> Inputs | None:
    """The files of the job's package, or None when there is no package directory or it is
    too large to ship whole (then probe instead)."""
    top = job.env.get("CARGO_MANIFEST_DIR", "")
    if not os.path.isabs(top) or not os.path.isfile(os.path.join(top, "Cargo.toml")):
        return None
    top = os.path.normpath(top)
    skip = {os.path.normpath(p) for p in exclude}
    files: list[str] = []
    dirs: list[str] = []
    size = 0
    for dirpath, dirnames, filenames in os.walk(top):
        # Prune in place: os.walk then never descends into them.
        dirnames[:] = [d for d in dirnames if _wanted_dir(os.path.join(dirpath, d), d, skip)]
        dirs.append(dirpath)
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # a dangling symlink: nothing to ship
            files.append(path)
            size += st.st_size
        if len(files) > PACKAGE_MAX_FILES or size > PACKAGE_MAX_BYTES:
            return None
    return Inputs(files, dirs, exact=False)


def _wanted_dir(path: str, name: str, skip: set[str]) -> bool:
    """Not hidden (.git), not a build output root, not a nested package (as `cargo package`
    leaves those out too)."""
    return not (name.startswith(".") or path in skip
                or os.path.isfile(os.path.join(path, "Cargo.toml")))


def probe_inputs(job: CompileJob, args: list[str]) -> Inputs:
    """Run rustc with only ``--emit=dep-info`` to learn which sources it reads (and the
    directories their paths pass through). ``args`` are the job's arguments without outputs
    or incremental state."""
    with tempfile.TemporaryDirectory(prefix="distbuild-probe-") as tmp:
        dep = os.path.join(tmp, "probe.d")
        argv = [job.argv[0], *args, f"--emit=dep-info={dep}", "--out-dir", tmp]
        proc = spawnlock.run(argv, cwd=job.cwd, env=job.env, capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=600)
        # rustc writes dep-info before type checking: a crate with errors still has one,
        # and then compiles remotely to report them like a local run would.
        if not os.path.exists(dep):
            raise RemoteError("the dep-info probe failed (compiling locally): "
                              + proc.stderr.decode(errors="replace")[-500:])
        with open(dep, encoding="utf-8", errors="surrogateescape") as f:
            info = parse_dep_info(f.read(), job.cwd)
        return Inputs(info.sources, info.via_dirs)
