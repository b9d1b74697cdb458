"""Keeping paths inside their sandbox: every action path goes through here."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from distbuild.errors import PathEscape


def check_relative(path: str) -> PurePosixPath:
    """Validate a sandbox-relative path: not absolute, no ``..``, no empty or NUL parts."""
    if "\x00" in path:
        raise PathEscape(f"path contains a NUL byte: {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute():
        raise PathEscape(f"absolute path not allowed in an action: {path!r}")
    if any(part == ".." for part in p.parts):
        raise PathEscape(f"path escapes its sandbox with '..': {path!r}")
    return p


def resolve_inside(root: Path, path: str) -> Path:
    """``root / path``, refusing anything (including symlinks) that resolves outside ``root``."""
    rel = check_relative(path)
    real_root = os.path.realpath(root)
    if real_root == "/":
        # An in-place action: nothing can resolve outside "/", so skip the (pure-Python,
        # per-component) realpath walk that would cost ~0.5 ms per path.
        return Path("/", rel)
    target = os.path.realpath(os.path.join(real_root, rel))
    if target != real_root and not target.startswith(real_root + os.sep):
        raise PathEscape(f"path {path!r} resolves outside the sandbox (to {target})")
    return Path(target)
