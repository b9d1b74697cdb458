"""Input manifests recorded per direct key, kept in the action cache.

Manifests are stored REAPI-style as an ActionResult whose single output file
``distbuild-manifests.json`` is a CAS blob, so a remote action cache can share them too.
"""

from __future__ import annotations

import json

from distbuild.actions import ActionResult, OutputFile
from distbuild.cas.action_cache import ActionCache
from distbuild.cas.store import BlobStore
from distbuild.errors import CasError
from distbuild.rustc.key import Manifest

MANIFEST_FILE = "distbuild-manifests.json"
MAX_MANIFESTS = 8  # per direct key; the oldest is dropped first


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
