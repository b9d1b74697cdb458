"""BLAKE3 digests: the identity of every blob (REAPI shape: lowercase hex hash + size)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import blake3

from distbuild.errors import InvalidDigest

CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True, order=True)
class Digest:
    """A blob's BLAKE3 hash (64 lowercase hex chars) and its size in bytes."""

    hash: str
    size: int

    def __post_init__(self) -> None:
        if not _HEX64.match(self.hash):
            raise InvalidDigest(f"not a BLAKE3 hex digest: {self.hash!r}")
        if self.size < 0:
            raise InvalidDigest(f"negative blob size: {self.size}")

    def __str__(self) -> str:
        return f"{self.hash}/{self.size}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``"<hash>/<size>"`` (or a bare hash, size unknown = -1 is refused)."""
        hash_, sep, size = text.strip().partition("/")
        if not sep or not size.isdigit():
            raise InvalidDigest(f"expected '<blake3-hex>/<size>', got {text!r}")
        return cls(hash_.lower(), int(size))


def digest_bytes(data: bytes) -> Digest:
    """Digest of an in-memory blob."""
    return Digest(blake3.blake3(data).hexdigest(), len(data))


def digest_stream(stream: BinaryIO) -> Digest:
    """Digest of a stream, read in chunks (never whole into memory)."""
    hasher = blake3.blake3()
    size = 0
    while chunk := stream.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(hasher.hexdigest(), size)


def digest_file(path: str | Path) -> Digest:
    """Digest of a file's contents, streamed."""
    with open(path, "rb") as f:
        return digest_stream(f)


EMPTY = digest_bytes(b"")
