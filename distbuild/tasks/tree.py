"""Input trees for tasks: host paths -> Directory blobs, and back into a sandbox; outputs -> CAS.

Symlinks to files are stored as the files they point to; other symlinks are skipped (a task's
input is content, and a link could point outside the sandbox).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from distbuild.actions import Directory, DirectoryNode, FileNode, OutputFile
from distbuild.cas.digest import Digest, digest_file
from distbuild.cas.store import BlobStore
from distbuild.codec import blob_of, decode_directory, encode_directory
from distbuild.errors import InvalidRequest
from distbuild.sandbox import check_relative, resolve_inside

if TYPE_CHECKING:
    from distbuild.tasks.task import TaskInput

BlobSource = bytes | Path  # what to upload: in-memory bytes or a file's contents
log = logging.getLogger(__name__)
_MAX_DEPTH = 64


class _Node:
    """A directory being assembled: name -> file (host path) or subdirectory."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.dirs: dict[str, _Node] = {}

    def child(self, name: str) -> _Node:
        if name in self.files:
            raise InvalidRequest(f"input {name!r} is both a file and a directory")
        return self.dirs.setdefault(name, _Node())

    def add_file(self, name: str, host: Path) -> None:
        if name in self.dirs or name in self.files:
            raise InvalidRequest(f"input {name!r} given twice")
        self.files[name] = host


def _add_host_dir(node: _Node, host: Path, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidRequest(f"input directory {host} is nested too deeply")
    for entry in sorted(os.scandir(host), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            _add_host_dir(node.child(entry.name), path, depth + 1)
        elif entry.is_file(follow_symlinks=True):
            node.add_file(entry.name, path)
        else:
            log.warning("input %s skipped: not a regular file or directory", path)


def build_tree(inputs: Iterable[TaskInput]) -> tuple[Digest, dict[Digest, BlobSource]]:
    """The root Directory digest of ``inputs`` and every blob (directories, files) it names."""
    root = _Node()
    for item in inputs:
        parts = check_relative(item.guest).parts
        if not parts:
            raise InvalidRequest("an input needs a name below the guest root")
        node = root
        for part in parts[:-1]:
            node = node.child(part)
        if item.host.is_dir():
            _add_host_dir(node.child(parts[-1]), item.host)
        elif item.host.is_file():
            node.add_file(parts[-1], item.host)
        else:
            raise InvalidRequest(f"input {item.host} is not a file or directory")
    blobs: dict[Digest, BlobSource] = {}
    return _encode(root, blobs), blobs


def _encode(node: _Node, blobs: dict[Digest, BlobSource]) -> Digest:
    files = []
    for name, host in node.files.items():
        digest = digest_file(host)
        blobs[digest] = host
        files.append(FileNode(name, digest, os.access(host, os.X_OK)))
    dirs = [DirectoryNode(name, _encode(child, blobs)) for name, child in node.dirs.items()]
    digest, data = blob_of(encode_directory(Directory(tuple(files), tuple(dirs))))
    blobs[digest] = data
    return digest


def upload(store: BlobStore, blobs: dict[Digest, BlobSource]) -> int:
    """Store the blobs ``store`` lacks; returns how many were sent."""
    bulk = getattr(store, "upload", None)
    if callable(bulk):  # RemoteCAS batches and streams on its own
        return int(bulk(blobs))
    missing = store.find_missing(blobs)
    for digest in missing:
        src = blobs[digest]
        if isinstance(src, Path):
            store.put_file(src)
        else:
            store.put_bytes(src)
    return len(missing)


def materialize(store: BlobStore, root: Digest, dest: Path, depth: int = 0) -> None:
    """Write the tree ``root`` into ``dest`` (which exists), checking every name."""
    if depth > _MAX_DEPTH:
        raise InvalidRequest("input tree nested too deeply")
    directory = decode_directory(store.get_bytes(root))
    for f in directory.files:
        target = dest / _name(f.name)
        store.copy_to(f.digest, target, 0o755 if f.is_executable else 0o644)
    for d in directory.directories:
        sub = dest / _name(d.name)
        sub.mkdir()
        materialize(store, d.digest, sub, depth + 1)


def _name(name: str) -> str:
    if len(check_relative(name).parts) != 1:
        raise InvalidRequest(f"a tree entry name must be one path component: {name!r}")
    return name


def collect_outputs(store: BlobStore, sandbox: Path, out_dir: str) -> tuple[OutputFile, ...]:
    """Every regular file under ``sandbox/out_dir``, stored, in path order (links skipped)."""
    top = resolve_inside(sandbox, out_dir)
    found: list[OutputFile] = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(sandbox).as_posix()
            found.append(OutputFile(rel, store.put_file(path), os.access(path, os.X_OK)))
    return tuple(sorted(found, key=lambda o: o.path))
