"""ByteStream resource names for CAS blobs (REAPI's form).

Reads: ``{instance}/blobs/{function/}{hash}/{size}``; writes:
``{instance}/uploads/{uuid}/blobs/{function/}{hash}/{size}{/anything}``. The function segment
is the lowercase name of a digest function REAPI added later (``blake3``); SHA-256 is written
without one, and a name without one means SHA-256 here. The instance may be empty (then the
name starts with ``blobs/`` or ``uploads/``) or span several path segments.
"""

from __future__ import annotations

from dataclasses import dataclass

from distbuild.cas.digest import BLAKE3, SHA256, Digest, DigestFunction
from distbuild.errors import InvalidDigest, InvalidRequest

_NAMED = {f.value: f for f in DigestFunction if f is not SHA256}


@dataclass(frozen=True)
class BlobResource:
    instance: str
    digest: Digest
    function: DigestFunction
    upload_id: str = ""  # writes only


def blob_subject(digest: Digest, function: DigestFunction = BLAKE3) -> str:
    """``blobs/{function/}{hash}/{size}``: a read name without the instance (also the subject
    of a MISSING violation in a PreconditionFailure)."""
    return f"blobs/{_segment(function)}{digest.hash}/{digest.size}"


def read_name(digest: Digest, function: DigestFunction = BLAKE3, instance: str = "") -> str:
    return _prefix(instance) + blob_subject(digest, function)


def write_name(digest: Digest, upload_id: str, function: DigestFunction = BLAKE3,
               instance: str = "") -> str:
    return (_prefix(instance)
            + f"uploads/{upload_id}/blobs/{_segment(function)}{digest.hash}/{digest.size}")


def parse(name: str, write: bool = False) -> BlobResource:
    """Parse a read (or, with ``write``, an upload) resource name; InvalidRequest if it is
    not one (compressed blobs included: we offer no compressor)."""
    parts = name.split("/")
    key = "uploads" if write else "blobs"
    if key not in parts:
        raise InvalidRequest(f"resource name {name!r} has no '{key}/' part")
    at = parts.index(key)
    instance, rest = "/".join(parts[:at]), parts[at + 1:]
    upload_id = ""
    if write:
        if len(rest) < 2 or rest[1] != "blobs":
            raise InvalidRequest(f"upload resource name {name!r}: expected "
                                 "uploads/{uuid}/blobs/... (compressed-blobs is not offered)")
        upload_id, rest = rest[0], rest[2:]
    function = SHA256
    if rest and rest[0] in _NAMED:
        function, rest = _NAMED[rest[0]], rest[1:]
    if len(rest) < 2 or not rest[1].isdigit():
        raise InvalidDigest(f"resource name {name!r}: expected .../{{hash}}/{{size}}")
    return BlobResource(instance, Digest(rest[0], int(rest[1])), function, upload_id)


def _prefix(instance: str) -> str:
    return f"{instance}/" if instance else ""


def _segment(function: DigestFunction) -> str:
    return "" if function is SHA256 else f"{function.value}/"
