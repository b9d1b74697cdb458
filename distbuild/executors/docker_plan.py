"""Where an action's files appear inside its container (pure logic, no engine needed).

The input root (the materialized sandbox) is bind-mounted **read-only**; by default at the
sandbox's own absolute path, so any absolute path a worker wrote into the action works exactly
as with the local executor. With the platform property ``input_root=/abs/path`` it appears at
that path instead, and ``input_root=/`` mounts each top-level entry of the sandbox at
``/<entry>`` so the client's own absolute paths can be reproduced (``/home/...``, ``/work/...``).

Writable: only the directories that will hold the action's outputs (an output path that is an
existing directory, else its parent), each bind-mounted read-write over the read-only root, and
a private, size-capped ``/tmp`` that vanishes with the container (the linker needs scratch
space). The image's root filesystem is read-only too.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from distbuild.errors import InvalidRequest, PathEscape
from distbuild.executors.base import ExecSpec
from distbuild.sandbox import check_relative, resolve_inside

# Image paths an input root must not shadow: the toolchain, the linker, libc, kernel mounts.
# (Below /tmp is allowed: the sandbox is mounted over the private tmpfs, hiding nothing.)
RESERVED = ("/toolchain", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/dev",
            "/sys")
DEFAULT_PATH = "/usr/bin:/bin"


@dataclass(frozen=True)
class Bind:
    source: Path  # host path
    target: str  # container path
    writable: bool = False


@dataclass(frozen=True)
class ContainerPlan:
    argv: list[str]
    env: dict[str, str]
    workdir: str
    binds: list[Bind] = field(default_factory=list)
    output_dirs: list[Path] = field(default_factory=list)  # host dirs to create, made writable


def _check_root(root: str) -> str:
    p = PurePosixPath(root)
    if not p.is_absolute() or ".." in p.parts or "\x00" in root:
        raise InvalidRequest(f"input_root must be an absolute path, got {root!r}")
    text = str(p)
    hidden = any(text == r or text.startswith(r + "/") for r in RESERVED)
    if text == "/tmp" or (text != "/" and hidden):
        raise InvalidRequest(f"input_root {root!r} would hide the image's {text}")
    return text


def _in_container(root: str, rel: str) -> str:
    return str(PurePosixPath(root) / rel) if rel not in ("", ".") else root


def _output_dirs(spec: ExecSpec, sandbox: Path) -> list[str]:
    """Sandbox-relative directories that must be writable, outermost only."""
    dirs: set[str] = set()
    for out in spec.output_paths:
        rel = check_relative(out)
        if (sandbox / rel).is_dir() and not (sandbox / rel).is_symlink():
            dirs.add(str(rel))
        else:
            dirs.add(str(rel.parent))
    outer = sorted(dirs, key=lambda d: (d.count("/"), d))
    kept: list[str] = []
    for d in outer:
        if not any(d == k or d.startswith(k + "/") or k == "." for k in kept):
            kept.append(d)
    return kept


def plan_container(spec: ExecSpec, sandbox: Path, rustc_in_image: str) -> ContainerPlan:
    """Mounts, argv, environment and working directory for ``spec`` run from ``sandbox``.

    ``argv[0]`` is replaced by the image's rustc when its file name is ``rustc``: the client's
    rustc path means nothing inside the image.

    Raises:
        PathEscape / InvalidRequest: a path would leave the sandbox or hide the image.
    """
    real = Path(os.path.realpath(sandbox))
    # The worker's own sandbox path is trusted (a fresh leaf directory hides nothing in the
    # image, even below /usr/local); a client-chosen input_root must keep off the image's dirs.
    root = _check_root(spec.prop("input_root")) if spec.prop("input_root") else str(real)
    binds: list[Bind] = []
    if root == "/":
        for entry in sorted(os.listdir(real)):
            target = "/" + entry
            if target == "/tmp" or any(target == r or r.startswith(target + "/") for r in RESERVED):
                raise InvalidRequest(f"input_root=/ : sandbox entry {entry!r} would hide {target}")
            binds.append(Bind(real / entry, target))
    else:
        binds.append(Bind(real, root))
    output_dirs: list[Path] = []
    for rel in _output_dirs(spec, real):
        if root == "/" and rel == ".":
            raise InvalidRequest("input_root=/ : outputs cannot live at the top level")
        host = real / rel
        host.mkdir(parents=True, exist_ok=True)
        resolve_inside(real, rel)  # refuse a directory that is (or sits under) a symlink out
        output_dirs.append(host)
        binds.append(Bind(host, _in_container(root, rel), writable=True))
    resolve_inside(real, spec.working_directory)
    argv = list(spec.argv)
    if not argv:
        raise InvalidRequest("an action needs a non-empty argv")
    if os.path.basename(argv[0]) == "rustc":
        argv[0] = rustc_in_image
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env["TMPDIR"] = "/tmp"  # the only scratch space there is; a client's TMPDIR does not exist
    # One mount per target: a writable one replaces a read-only one at the same place (an
    # output at the top of the input root makes the root itself writable).
    by_target: dict[str, Bind] = {}
    for b in binds:
        if not (b.target in by_target and by_target[b.target].writable):
            by_target[b.target] = b
    return ContainerPlan(argv, env, _in_container(root, spec.working_directory),
                         list(by_target.values()), output_dirs)


def grant_read(root: Path) -> int:
    """Make the input tree readable (and directories traversable) by any user; returns the
    number of entries changed.

    Needed when the worker runs as root and the action as ``nobody``: a worker's inputs are
    hard links to its CAS blobs, which are created private (0600). Their contents are
    checked against their digests, so widening read access discloses nothing secret.
    """
    changed = _widen(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            changed += _widen(os.path.join(dirpath, name))
    return changed


def _widen(path: str) -> int:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return 0
    want = st.st_mode | 0o444
    if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100:
        want |= 0o111
    if want == st.st_mode:
        return 0
    os.chmod(path, stat.S_IMODE(want))
    return 1


__all__ = ["Bind", "ContainerPlan", "PathEscape", "grant_read", "plan_container"]
