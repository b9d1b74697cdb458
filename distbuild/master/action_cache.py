"""The action cache: key -> ActionResult, and key -> recorded input manifests.

Manifests are stored REAPI-style as an ActionResult whose single output file
``distbuild-manifests.json`` is a CAS blob, so a remote action cache can share them too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

from distbuild.actions import ActionResult, OutputFile
from distbuild.cas.store import BlobStore
from distbuild.errors import CasError
from distbuild.rustc.key import Manifest

MANIFEST_FILE = "distbuild-manifests.json"
MAX_MANIFESTS = 8  # per direct key; the oldest is dropped first


class ActionCache(Protocol):
    def get(self, key: str) -> ActionResult | None: ...

    def put(self, key: str, result: ActionResult) -> None: ...


class LocalActionCache:
    """Action results as small JSON files: ``<root>/<key[:2]>/<key>``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> ActionResult | None:
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        try:
            return ActionResult.from_json(data)
        except (ValueError, KeyError, TypeError):
            return None  # a damaged entry is a miss; the next store replaces it

    def put(self, key: str, result: ActionResult) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".put-")
        with os.fdopen(fd, "wb") as f:
            f.write(result.to_json())
        os.replace(tmp, path)


def load_manifests(ac: ActionCache, cas: BlobStore, direct_key: str) -> list[Manifest]:
    entry = ac.get(direct_key)
    if entry is None or not entry.output_files:
        return []
    try:
        raw = json.loads(cas.get_bytes(entry.output_files[0].digest))
    except (CasError, ValueError):
        return []
    return [Manifest(tuple(m["sources"]), tuple(m["env_deps"])) for m in raw]


def record_manifest(ac: ActionCache, cas: BlobStore, direct_key: str, manifest: Manifest) -> None:
    """Add ``manifest`` to those recorded under ``direct_key`` (most recent first)."""
    existing = [m for m in load_manifests(ac, cas, direct_key) if m != manifest]
    manifests = [manifest, *existing][:MAX_MANIFESTS]
    blob = json.dumps([m.to_json() for m in manifests], sort_keys=True).encode()
    digest = cas.put_bytes(blob)
    ac.put(direct_key, ActionResult(output_files=(OutputFile(MANIFEST_FILE, digest),)))
