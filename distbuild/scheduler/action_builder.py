"""Client-side construction of an Action: input tree (Merkle Directory blobs), Command, Action.

``prepare_action`` returns the action digest plus every blob the CAS needs (the caller uploads
them with ``RemoteCAS.upload``, which sends only the missing ones).

    prepared = prepare_action(["/bin/echo", "hi"], files={}, output_paths=())
    cas.upload(prepared.blobs)
    job = SchedulerClient(addr, cfg).submit(prepared.digest)
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from distbuild.actions import Action, Command, Directory, DirectoryNode, FileNode
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction, digest_bytes, digest_file
from distbuild.codec import encode_action, encode_command, encode_directory
from distbuild.sandbox import check_relative

BlobSource = bytes | Path


@dataclass(frozen=True)
class InputFile:
    digest: Digest
    source: BlobSource
    is_executable: bool = False

    @classmethod
    def of(cls, source: BlobSource, is_executable: bool = False) -> InputFile:
        digest = digest_bytes(source) if isinstance(source, bytes) else digest_file(source)
        return cls(digest, source, is_executable)


@dataclass
class PreparedAction:
    digest: Digest
    action: Action
    command: Command
    blobs: dict[Digest, BlobSource] = field(default_factory=dict)


@dataclass
class _Dir:
    files: dict[str, InputFile] = field(default_factory=dict)
    dirs: dict[str, _Dir] = field(default_factory=dict)


def build_tree(files: dict[str, InputFile], dirs: tuple[str, ...] = (),
               function: DigestFunction = BLAKE3) -> tuple[Digest, dict[Digest, BlobSource]]:
    """The input-root digest and all blobs (files and Directory messages) of a tree.

    ``files`` maps sandbox-relative paths to their contents (digests of ``function``); ``dirs``
    lists directories that must exist even when empty. Paths are checked (no '..', not
    absolute).
    """
    root = _Dir()

    def node(path: str) -> _Dir:
        d = root
        for part in (p for p in path.split("/") if p and p != "."):
            d = d.dirs.setdefault(part, _Dir())
        return d

    for path in dirs:
        check_relative(path)
        node(path)
    for path, f in files.items():
        check_relative(path)
        parent, name = posixpath.split(posixpath.normpath(path))
        node(parent).files[name] = f
    blobs: dict[Digest, BlobSource] = {}

    def encode(d: _Dir) -> Digest:
        subdirs = tuple(DirectoryNode(name, encode(child)) for name, child in d.dirs.items())
        for f in d.files.values():
            blobs[f.digest] = f.source
        msg = Directory(
            files=tuple(FileNode(n, f.digest, f.is_executable) for n, f in d.files.items()),
            directories=subdirs)
        data = encode_directory(msg)
        digest = digest_bytes(data, function)
        blobs[digest] = data
        return digest

    return encode(root), blobs


def prepare_action(arguments: list[str] | tuple[str, ...], files: dict[str, InputFile],
                   output_paths: tuple[str, ...] = (), env: dict[str, str] | None = None,
                   working_directory: str = "", platform: tuple[tuple[str, str], ...] = (),
                   timeout_s: float = 0.0, do_not_cache: bool = False,
                   dirs: tuple[str, ...] = (), host_root: bool = False,
                   function: DigestFunction = BLAKE3) -> PreparedAction:
    """Everything needed to submit ``arguments`` as an Action (see the module docstring).

    ``host_root``: the action runs in place on the worker's own ``/`` (``execution=in-place``),
    so its input tree stays empty instead of spelling out the working directory.
    ``function``: the digest function of ``files`` and of the blobs made here.
    """
    for out in output_paths:  # relative to the working directory, inside the input root
        check_relative(posixpath.normpath(posixpath.join(working_directory, out)))
    extra_dirs = (working_directory,) if working_directory and not host_root else ()
    root, blobs = build_tree(files, dirs + extra_dirs, function)
    command = Command(arguments=tuple(arguments),
                      environment=tuple(sorted((env or {}).items())),
                      output_paths=tuple(sorted(set(output_paths))),
                      working_directory=working_directory, platform=tuple(sorted(platform)))
    cmd_blob = encode_command(command)
    cmd_digest = digest_bytes(cmd_blob, function)
    blobs[cmd_digest] = cmd_blob
    action = Action(command_digest=cmd_digest, input_root_digest=root, timeout_s=timeout_s,
                    do_not_cache=do_not_cache, platform=tuple(sorted(platform)))
    action_blob = encode_action(action)
    digest = digest_bytes(action_blob, function)
    blobs[digest] = action_blob
    return PreparedAction(digest, action, command, blobs)
