"""Digests: the identity of every blob (REAPI shape: lowercase hex hash + size).

Two digest functions: BLAKE3, ours (the master, its cache and its cluster use nothing else),
and SHA-256, what REAPI clients and servers that predate BLAKE3 speak (Bazel before 6.4,
BuildGrid, bazel-remote). Both hash to 64 hex digits, so a ``Digest`` does not say which one
made it: the function travels beside it (in each REAPI request, with each job), and every store
holds the blobs of one function.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import blake3

from distbuild.errors import InvalidDigest

CHUNK = 1 << 20
BIG = 4 << 20  # BLAKE3 hashes blobs above this on several threads
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class Hasher(Protocol):
    def update(self, data: Any, /) -> object: ...  # bytes, memoryview, mmap

    def hexdigest(self) -> str: ...


class DigestFunction(enum.Enum):
    """A hash function blobs are named by; the value is REAPI's lowercase name."""

    BLAKE3 = "blake3"
    SHA256 = "sha256"

    def hasher(self, size: int = 0) -> Hasher:
        """A new incremental hasher; ``size`` (if known) lets BLAKE3 use several threads."""
        if self is DigestFunction.BLAKE3:
            return blake3.blake3(max_threads=blake3.blake3.AUTO if size > BIG else 1)
        return hashlib.sha256()

    def __str__(self) -> str:
        return self.value


BLAKE3 = DigestFunction.BLAKE3
SHA256 = DigestFunction.SHA256


@dataclass(frozen=True, order=True)
class Digest:
    """A blob's hash (64 lowercase hex chars, BLAKE3 or SHA-256) and its size in bytes."""

    hash: str
    size: int

    def __post_init__(self) -> None:
        if not _HEX64.match(self.hash):
            raise InvalidDigest(f"not a 64-digit lowercase hex digest (BLAKE3 or SHA-256): "
                                f"{self.hash!r}")
        if self.size < 0:
            raise InvalidDigest(f"negative blob size: {self.size}")

    def __str__(self) -> str:
        return f"{self.hash}/{self.size}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``"<hash>/<size>"``."""
        hash_, sep, size = text.strip().partition("/")
        if not sep or not size.isdigit():
            raise InvalidDigest(f"expected '<hex hash>/<size>', got {text!r}")
        return cls(hash_.lower(), int(size))


def digest_bytes(data: bytes, function: DigestFunction = BLAKE3) -> Digest:
    """Digest of an in-memory blob."""
    if function is BLAKE3:
        return Digest(blake3.blake3(data).hexdigest(), len(data))
    return Digest(hashlib.sha256(data).hexdigest(), len(data))


def digest_stream(stream: BinaryIO, function: DigestFunction = BLAKE3) -> Digest:
    """Digest of a stream, read in chunks (never whole into memory)."""
    hasher = function.hasher()
    size = 0
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(hasher.hexdigest(), size)


def digest_file(path: str | Path, function: DigestFunction = BLAKE3) -> Digest:
    """Digest of a file's contents, streamed."""
    with open(path, "rb") as f:
        return digest_stream(f, function)


EMPTY = digest_bytes(b"")  # the empty blob, BLAKE3
