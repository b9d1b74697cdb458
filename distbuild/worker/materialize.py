"""Input trees into sandboxes, and the sandbox-root placeholder (outputs: ``outputs.py``).

Argument and environment strings may contain ``SANDBOX_ROOT``; the worker substitutes the
sandbox's absolute path before running, and writes it back as the placeholder into dep-info
outputs (``*.d``) and stdout/stderr, so results never name a worker's private directory.

Every name in a Directory, every symlink target and every output path is checked: nothing may
leave the sandbox ('..', absolute paths, '/' inside a name, symlinks pointing out).
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path

from distbuild.actions import Directory
from distbuild.cas.digest import Digest
from distbuild.codec import decode_directory
from distbuild.errors import PathEscape
from distbuild.sandbox import check_relative, resolve_inside
from distbuild.worker.blob_cache import CachedStore

SANDBOX_ROOT = "@@SANDBOX@@"
MAX_NODES = 1_000_000


def check_name(name: str, where: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise PathEscape(f"invalid name {name!r} in input directory {where or '/'}: "
                         "names must be single path components")


def fetch_tree(root: Digest, store: CachedStore) -> dict[Digest, Directory]:
    """Every Directory of the tree, fetched level by level (one round trip per level)."""
    tree: dict[Digest, Directory] = {}
    level = [root]
    while level:
        store.ensure(level)
        nxt: list[Digest] = []
        for digest in level:
            if digest in tree:
                continue
            d = decode_directory(store.get_bytes(digest))
            tree[digest] = d
            nxt += [n.digest for n in d.directories if n.digest not in tree]
            if len(tree) > MAX_NODES:
                raise PathEscape(f"input tree has more than {MAX_NODES} directories")
        level = list(dict.fromkeys(nxt))
    return tree


def materialize(root: Digest, sandbox: Path, store: CachedStore) -> int:
    """Lay the tree out under ``sandbox``; returns the number of files. Refuses escapes."""
    tree = fetch_tree(root, store)
    files: list[Digest] = []
    _validate(root, tree, "", files)
    store.ensure(d for d in files if d.size > 0)
    sandbox.mkdir(parents=True, exist_ok=True)
    return _write(root, tree, sandbox, "", store)


def _validate(digest: Digest, tree: dict[Digest, Directory], rel: str,
              files: list[Digest]) -> None:
    d = tree[digest]
    for f in d.files:
        check_name(f.name, rel)
        files.append(f.digest)
    for s in d.symlinks:
        check_name(s.name, rel)
        target = s.target
        if target.startswith("/"):
            raise PathEscape(f"symlink {posixpath.join(rel, s.name)!r} -> {target!r}: "
                             "absolute symlink targets are not allowed")
        resolved = posixpath.normpath(posixpath.join(rel, target))
        if resolved == ".." or resolved.startswith("../"):
            raise PathEscape(f"symlink {posixpath.join(rel, s.name)!r} -> {target!r} points "
                             "outside the sandbox")
    for n in d.directories:
        check_name(n.name, rel)
        _validate(n.digest, tree, posixpath.join(rel, n.name), files)


def _write(digest: Digest, tree: dict[Digest, Directory], base: Path, rel: str,
           store: CachedStore) -> int:
    d = tree[digest]
    count = 0
    for f in d.files:
        dest = base / f.name
        if f.digest.size == 0:
            dest.touch()
        elif f.is_executable:
            store.local.copy_to(f.digest, dest, 0o755)
        else:
            src = store.local.path_of(f.digest)
            try:
                # Share the cached blob; read-only so an action cannot scribble on the cache
                # by accident (a corrupted blob would still be caught when next read whole).
                os.chmod(src, 0o444)
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
        count += 1
    for s in d.symlinks:
        os.symlink(s.target, base / s.name)
    for n in d.directories:
        (base / n.name).mkdir(exist_ok=True)
        count += _write(n.digest, tree, base / n.name, posixpath.join(rel, n.name), store)
    return count


def prepare_outputs(sandbox: Path, output_paths: tuple[str, ...]) -> None:
    """Check every output path and create its parent directory (as REAPI workers do)."""
    for out in output_paths:
        check_relative(out)
        parent = posixpath.dirname(out)
        if parent:
            resolve_inside(sandbox, parent)
            (sandbox / parent).mkdir(parents=True, exist_ok=True)
            resolve_inside(sandbox, parent)  # a symlink in the tree must not redirect it


def substitute(text: str, sandbox: Path) -> str:
    return text.replace(SANDBOX_ROOT, str(sandbox))


def unsubstitute(data: bytes, sandbox: Path) -> bytes:
    return data.replace(str(sandbox).encode(), SANDBOX_ROOT.encode())
