"""An action's outputs, out of its sandbox and into the CAS, as REAPI returns them.

An output path that names a regular file becomes an ``OutputFile``; one that names a
directory becomes an ``OutputDirectory``: the regular files below it, stored, and one REAPI
``Tree`` blob describing it (the root Directory, then every other Directory once, parents
first, so equal directories give equal Trees). Symlinks are not returned (they could point
anywhere), and missing outputs are simply absent. Every blob is hashed once, with the store's
digest function, while it is stored in the worker's cache; the remote is sent what it lacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from distbuild.actions import Directory, DirectoryNode, FileNode, OutputDirectory, OutputFile
from distbuild.cas.digest import Digest, digest_bytes
from distbuild.codec import encode_directory, encode_tree
from distbuild.errors import LimitExceeded
from distbuild.sandbox import resolve_inside
from distbuild.worker.blob_cache import CachedStore
from distbuild.worker.materialize import SANDBOX_ROOT

MAX_TREE_DIRS = 100_000


@dataclass(frozen=True)
class Outputs:
    files: tuple[OutputFile, ...] = ()
    directories: tuple[OutputDirectory, ...] = ()


def collect_outputs(sandbox: Path, output_paths: tuple[str, ...], store: CachedStore,
                    placeholder: bool = True) -> Outputs:
    """Store the outputs that exist (paths relative to ``sandbox``).

    With ``placeholder``, the sandbox's path in dep-info files becomes ``SANDBOX_ROOT``.
    """
    blobs: dict[Digest, bytes | Path] = {}
    files: list[OutputFile] = []
    dirs: list[OutputDirectory] = []
    root = str(sandbox).encode()
    for out in sorted(set(output_paths)):
        path = resolve_inside(sandbox, out)
        if path.is_dir():
            dirs.append(OutputDirectory(out, _store_tree(path, store, blobs)))
        elif path.is_file():
            data = None
            if out.endswith(".d") and placeholder:
                data = path.read_bytes().replace(root, SANDBOX_ROOT.encode())
            files.append(OutputFile(out, _store_file(path, data, store, blobs),
                                    os.access(path, os.X_OK)))
    store.send(blobs)
    return Outputs(tuple(files), tuple(dirs))


def _store_file(path: Path, data: bytes | None, store: CachedStore,
                blobs: dict[Digest, bytes | Path]) -> Digest:
    # Hashed once, while stored in the local cache: the next job here fetches nothing.
    digest = store.local.put_bytes(data) if data is not None else store.local.put_file(path)
    blobs[digest] = path if data is None else data
    return digest


def _store_tree(top: Path, store: CachedStore, blobs: dict[Digest, bytes | Path]) -> Digest:
    """Store every file below ``top`` and the Tree describing it; returns the Tree's digest."""
    encoded: dict[Digest, Directory] = {}  # each distinct Directory once

    def visit(path: Path) -> tuple[Directory, Digest]:
        if len(encoded) > MAX_TREE_DIRS:
            raise LimitExceeded(f"output directory {top} has more than {MAX_TREE_DIRS} "
                                "directories")
        files, subdirs = [], []
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_symlink():
                continue
            if entry.is_dir():
                _, digest = visit(Path(entry.path))
                subdirs.append(DirectoryNode(entry.name, digest))
            elif entry.is_file():
                digest = _store_file(Path(entry.path), None, store, blobs)
                files.append(FileNode(entry.name, digest, os.access(entry.path, os.X_OK)))
        directory = Directory(tuple(files), tuple(subdirs))
        digest = digest_bytes(encode_directory(directory), store.function)
        encoded.setdefault(digest, directory)
        return directory, digest

    root, root_digest = visit(top)
    children, seen, level = [], {root_digest}, list(root.directories)
    while level:  # breadth first: parents before children
        nxt: list[DirectoryNode] = []
        for node in level:
            if node.digest not in seen:
                seen.add(node.digest)
                children.append(encoded[node.digest])
                nxt += encoded[node.digest].directories
        level = nxt
    tree = encode_tree(root, children)
    digest = store.local.put_bytes(tree)
    blobs[digest] = tree
    return digest
