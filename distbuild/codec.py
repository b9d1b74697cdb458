"""The canonical content encoding: Command, Directory and Action as REAPI protobuf bytes.

These bytes are what a digest names (an Action's digest is its action-cache key; a
Directory's digest names a level of an input tree), so they must be exactly REAPI's: fields in
number order, no unknown fields, lists sorted as the specification requires. Everything that
hashes or reads such a blob goes through this module; the message <-> dataclass conversions
the services need for everything else live in ``distbuild/reapi/convert.py``.

Decoding accepts what older REAPI clients send: a Command with the v2.0 ``output_files`` and
``output_directories`` (Bazel 4) instead of ``output_paths``, and platform properties in the
Command instead of the Action.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import TypeVar

from google.protobuf import duration_pb2

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild.actions import Action, Command, Directory, DirectoryNode, FileNode, SymlinkNode
from distbuild.cas.digest import BLAKE3, Digest, DigestFunction, digest_bytes
from distbuild.errors import InvalidDigest, InvalidRequest

Properties = tuple[tuple[str, str], ...]


# -- digests and platforms (shared with reapi/convert.py) ----------------------------------------
def digest_to_proto(d: Digest) -> re_pb.Digest:
    return re_pb.Digest(hash=d.hash, size_bytes=d.size)


def digest_from_proto(msg: re_pb.Digest) -> Digest:
    """Validate and convert; raises InvalidDigest with the offending value in the message."""
    try:
        return Digest(msg.hash, msg.size_bytes)
    except InvalidDigest as e:
        raise InvalidDigest(f"malformed digest {msg.hash!r}/{msg.size_bytes}: {e}") from None


def optional_digest(msg: re_pb.Digest) -> Digest | None:
    return digest_from_proto(msg) if msg.hash else None


def platform_to_proto(props: Properties) -> re_pb.Platform:
    return re_pb.Platform(properties=[re_pb.Platform.Property(name=n, value=v)
                                      for n, v in sorted(props)])


def platform_from_proto(msg: re_pb.Platform) -> Properties:
    return tuple(sorted((p.name, p.value) for p in msg.properties))


# -- command, directory, action -----------------------------------------------------------------
def command_to_proto(c: Command) -> re_pb.Command:
    return re_pb.Command(
        arguments=list(c.arguments),
        environment_variables=[re_pb.Command.EnvironmentVariable(name=k, value=v)
                               for k, v in sorted(c.environment)],
        output_paths=sorted(c.output_paths),
        working_directory=c.working_directory,
        platform=platform_to_proto(c.platform),
    )


def command_from_proto(msg: re_pb.Command) -> Command:
    # Since v2.1 output_paths supersedes the older pair, which is then ignored.
    outputs = (tuple(msg.output_paths) if msg.output_paths
               else tuple(sorted({*msg.output_files, *msg.output_directories})))
    return Command(
        arguments=tuple(msg.arguments),
        environment=tuple((e.name, e.value) for e in msg.environment_variables),
        output_paths=outputs,
        working_directory=msg.working_directory,
        platform=platform_from_proto(msg.platform),
    )


def directory_to_proto(d: Directory) -> re_pb.Directory:
    return re_pb.Directory(
        files=[re_pb.FileNode(name=f.name, digest=digest_to_proto(f.digest),
                              is_executable=f.is_executable)
               for f in sorted(d.files, key=lambda f: f.name)],
        directories=[re_pb.DirectoryNode(name=n.name, digest=digest_to_proto(n.digest))
                     for n in sorted(d.directories, key=lambda n: n.name)],
        symlinks=[re_pb.SymlinkNode(name=s.name, target=s.target)
                  for s in sorted(d.symlinks, key=lambda s: s.name)],
    )


def directory_from_proto(msg: re_pb.Directory) -> Directory:
    return Directory(
        files=tuple(FileNode(f.name, digest_from_proto(f.digest), f.is_executable)
                    for f in msg.files),
        directories=tuple(DirectoryNode(n.name, digest_from_proto(n.digest))
                          for n in msg.directories),
        symlinks=tuple(SymlinkNode(s.name, s.target) for s in msg.symlinks),
    )


def action_to_proto(a: Action) -> re_pb.Action:
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(int(a.timeout_s * 1e9))
    return re_pb.Action(
        command_digest=digest_to_proto(a.command_digest),
        input_root_digest=digest_to_proto(a.input_root_digest),
        timeout=timeout, do_not_cache=a.do_not_cache, salt=a.salt.encode(),
        platform=platform_to_proto(a.platform),
    )


def action_from_proto(msg: re_pb.Action) -> Action:
    if not msg.HasField("command_digest") or not msg.HasField("input_root_digest"):
        raise InvalidRequest("an Action needs a command_digest and an input_root_digest")
    return Action(
        command_digest=digest_from_proto(msg.command_digest),
        input_root_digest=digest_from_proto(msg.input_root_digest),
        timeout_s=msg.timeout.ToNanoseconds() / 1e9, do_not_cache=msg.do_not_cache,
        salt=msg.salt.decode(errors="replace"), platform=platform_from_proto(msg.platform),
    )


# -- bytes --------------------------------------------------------------------------------------
def encode_command(c: Command) -> bytes:
    return command_to_proto(c).SerializeToString(deterministic=True)


def encode_directory(d: Directory) -> bytes:
    return directory_to_proto(d).SerializeToString(deterministic=True)


def encode_action(a: Action) -> bytes:
    return action_to_proto(a).SerializeToString(deterministic=True)


def decode_command(data: bytes) -> Command:
    return command_from_proto(_parse(re_pb.Command(), data, "Command"))


def decode_directory(data: bytes) -> Directory:
    return directory_from_proto(_parse(re_pb.Directory(), data, "Directory"))


def decode_action(data: bytes) -> Action:
    return action_from_proto(_parse(re_pb.Action(), data, "Action"))


def encode_tree(root: Directory, children: Sequence[Directory]) -> bytes:
    """A REAPI Tree: ``root`` then ``children`` in the order given (parents before children
    makes it topologically sorted)."""
    return re_pb.Tree(root=directory_to_proto(root),
                      children=[directory_to_proto(c) for c in children]
                      ).SerializeToString(deterministic=True)


def tree_files(data: bytes, function: DigestFunction = BLAKE3) -> list[tuple[str, FileNode]]:
    """Every file of an encoded Tree with its path below the tree's root, in path order.

    Raises InvalidRequest for a Tree that names a directory it does not contain.
    """
    tree = _parse(re_pb.Tree(), data, "Tree")
    by_digest = {digest_bytes(c.SerializeToString(deterministic=True), function):
                 directory_from_proto(c) for c in tree.children}
    out: list[tuple[str, FileNode]] = []
    pending = [("", directory_from_proto(tree.root))]
    while pending:
        prefix, directory = pending.pop()
        out += [(posixpath.join(prefix, f.name), f) for f in directory.files]
        for node in directory.directories:
            child = by_digest.get(node.digest)
            if child is None:
                raise InvalidRequest(f"Tree lacks its directory {node.digest} ({node.name})")
            if len(out) + len(pending) > 1_000_000:
                raise InvalidRequest("Tree too large")
            pending.append((posixpath.join(prefix, node.name), child))
    return sorted(out, key=lambda item: item[0])


_M = TypeVar("_M", re_pb.Command, re_pb.Directory, re_pb.Action, re_pb.Tree)


def _parse(msg: _M, data: bytes, what: str) -> _M:
    try:
        msg.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError or RuntimeWarning-ish errors
        raise InvalidRequest(f"blob is not a valid {what} message: {e}") from e
    return msg


def blob_of(encoded: bytes, function: DigestFunction = BLAKE3) -> tuple[Digest, bytes]:
    """(digest, bytes) of an encoded message, ready to store."""
    return digest_bytes(encoded, function), encoded
