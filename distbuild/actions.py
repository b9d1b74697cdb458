"""The execution data model: the Bazel Remote Execution API v2's, as plain dataclasses.

Protobuf messages (``distbuild/_proto``) stop at the service boundary: ``distbuild/codec.py``
makes the canonical bytes that are hashed, ``distbuild/reapi/convert.py`` the service messages.
An Action names a Command and an input-root Directory tree by digest; an ActionResult lists
output files by digest with the exit code, stdout/stderr and execution metadata. Paths in a
Command's outputs and an ActionResult are relative to the working directory, as in REAPI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from distbuild.cas.digest import Digest


@dataclass(frozen=True)
class Command:
    arguments: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()  # sorted by name
    output_paths: tuple[str, ...] = ()  # relative to the input root
    working_directory: str = ""  # relative to the input root
    platform: tuple[tuple[str, str], ...] = ()  # e.g. (("executor", "local"), ("os", "linux"))


@dataclass(frozen=True)
class FileNode:
    name: str
    digest: Digest
    is_executable: bool = False


@dataclass(frozen=True)
class DirectoryNode:
    name: str
    digest: Digest


@dataclass(frozen=True)
class SymlinkNode:
    name: str
    target: str


@dataclass(frozen=True)
class Directory:
    files: tuple[FileNode, ...] = ()
    directories: tuple[DirectoryNode, ...] = ()
    symlinks: tuple[SymlinkNode, ...] = ()


@dataclass(frozen=True)
class Action:
    command_digest: Digest
    input_root_digest: Digest
    timeout_s: float = 0.0
    do_not_cache: bool = False
    salt: str = ""
    platform: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative to the input root (or, in the local cache, to a path root)
    digest: Digest
    is_executable: bool = False


@dataclass(frozen=True)
class OutputDirectory:
    path: str  # relative to the working directory
    tree_digest: Digest  # of an encoded REAPI Tree: the directory and everything below it


@dataclass(frozen=True)
class ExecutionMetadata:
    worker: str = ""
    executor: str = ""
    queued_at: float = 0.0
    started_at: float = 0.0
    completed_at: float = 0.0
    toolchain: str = ""
    fuel_consumed: int = 0


@dataclass(frozen=True)
class ActionResult:
    output_files: tuple[OutputFile, ...] = ()
    exit_code: int = 0
    stdout_digest: Digest | None = None
    stderr_digest: Digest | None = None
    metadata: ExecutionMetadata = field(default_factory=ExecutionMetadata)
    output_directories: tuple[OutputDirectory, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps(_plain(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ActionResult:
        raw = json.loads(data)
        return cls(
            output_files=tuple(
                OutputFile(o["path"], _digest(o["digest"]), o["is_executable"])
                for o in raw["output_files"]
            ),
            exit_code=raw["exit_code"],
            stdout_digest=_digest(raw["stdout_digest"]) if raw["stdout_digest"] else None,
            stderr_digest=_digest(raw["stderr_digest"]) if raw["stderr_digest"] else None,
            metadata=ExecutionMetadata(**raw["metadata"]),
            output_directories=tuple(OutputDirectory(o["path"], _digest(o["tree_digest"]))
                                     for o in raw.get("output_directories", ())),
        )


def _plain(obj: Any) -> Any:
    """asdict() with Digests rendered as ``hash/size`` strings."""
    if isinstance(obj, Digest):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return obj


def _digest(value: str) -> Digest:
    return Digest.parse(value)


__all__ = [
    "Action", "ActionResult", "Command", "Directory", "DirectoryNode", "ExecutionMetadata",
    "FileNode", "OutputDirectory", "OutputFile", "SymlinkNode", "asdict",
]
