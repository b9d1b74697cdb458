"""Toolchain images without a registry: ``docker import`` of the toolchain archive.

The archive in the CAS is already a root filesystem (see ``distbuild.toolchain``), so the image
is one import away. It is tagged ``distbuild-toolchain:<first 16 hex of the digest>`` and
labelled with the whole digest; an image is reused only when its label matches. Imports are
serialized per digest within a process (a lock) and across processes (``flock``), so several
actions or workers on one host needing a new toolchain at once import it once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from distbuild.cas.digest import Digest
from distbuild.cas.store import BlobStore
from distbuild.errors import BlobNotFound, CasError, ExecutorUnavailable

log = logging.getLogger(__name__)

IMAGE_REPO = "distbuild-toolchain"
LABEL_TOOLCHAIN = "distbuild.toolchain"
ACTION_USER = "65534:65534"  # nobody:nogroup, present in the image's /etc/passwd
# Host-wide, not per worker home: every worker on this host shares the engine's images.
_LOCK_DIR = Path(tempfile.gettempdir()) / f"distbuild-docker-locks-{os.getuid()}"


def image_tag(digest: Digest) -> str:
    return f"{IMAGE_REPO}:{digest.hash[:16]}"


@dataclass(frozen=True)
class ImageInfo:
    ref: str  # the tag
    image_id: str
    fetch_seconds: float = 0.0  # 0 when it was already there
    import_seconds: float = 0.0


class ToolchainImages:
    """Finds or builds the image of a toolchain digest, fetching the archive from ``store``."""

    def __init__(self, api: docker.APIClient, store: BlobStore, work_dir: Path):
        self._api = api
        self._store = store
        self._dir = work_dir
        self._known: dict[Digest, ImageInfo] = {}
        self._guard = threading.Lock()
        self._locks: dict[Digest, threading.Lock] = {}

    def ensure(self, digest: Digest) -> ImageInfo:
        """The image for ``digest``, importing it the first time.

        Raises:
            BlobNotFound: the archive is not in the store.
            ExecutorUnavailable: fetching or importing it failed.
        """
        known = self._known.get(digest)
        if known is not None:
            return known
        with self._guard:
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if digest in self._known:
                return self._known[digest]
            info = self._existing(digest)
            if info is None:
                self._dir.mkdir(parents=True, exist_ok=True)
                _LOCK_DIR.mkdir(parents=True, exist_ok=True)
                with open(_LOCK_DIR / f"{digest.hash}.lock", "w") as flock:
                    fcntl.flock(flock, fcntl.LOCK_EX)
                    info = self._existing(digest) or self._import(digest)
            self._known[digest] = info
            return info

    def forget(self, digest: Digest) -> None:
        """Drop the memo (e.g. after someone removed the image)."""
        self._known.pop(digest, None)

    def _existing(self, digest: Digest) -> ImageInfo | None:
        try:
            attrs = self._api.inspect_image(image_tag(digest))
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as e:
            raise ExecutorUnavailable(f"docker engine error inspecting images: {e}") from e
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_TOOLCHAIN) != str(digest):
            log.warning("image %s is not toolchain %s (label %r); re-importing",
                        image_tag(digest), digest, labels.get(LABEL_TOOLCHAIN))
            return None
        return ImageInfo(image_tag(digest), attrs["Id"])

    def _import(self, digest: Digest) -> ImageInfo:
        archive = self._dir / f"{digest.hash}.tar.gz"
        start = time.monotonic()
        try:
            self._store.copy_to(digest, archive)
        except BlobNotFound as e:  # the client did not upload it: no other worker would do better
            raise BlobNotFound(f"toolchain archive {digest} is not in the CAS: {e}") from e
        except CasError as e:
            raise ExecutorUnavailable(f"toolchain {digest} could not be fetched: {e}") from e
        fetched = time.monotonic()
        repo, tag = image_tag(digest).split(":")
        try:
            self._api.import_image_from_file(
                str(archive), repository=repo, tag=tag,
                changes=[f"LABEL {LABEL_TOOLCHAIN}={digest}", "ENV PATH=/usr/bin:/bin",
                         f"USER {ACTION_USER}"],
            )
        except docker.errors.APIError as e:
            raise ExecutorUnavailable(f"docker import of toolchain {digest} failed: {e}") from e
        finally:
            os.unlink(archive)  # the image is the kept form; the blob stays in the store
        info = self._existing(digest)
        if info is None:
            raise ExecutorUnavailable(f"docker import of toolchain {digest} left no image")
        done = time.monotonic()
        log.info("imported toolchain %s as %s (fetch %.1fs, import %.1fs)", digest, info.ref,
                 fetched - start, done - fetched)
        return ImageInfo(info.ref, info.image_id, round(fetched - start, 3),
                         round(done - fetched, 3))


def remove_toolchain_image(api: docker.APIClient, digest: Digest) -> bool:
    """Remove a toolchain's image; False if it was not there."""
    try:
        api.remove_image(image_tag(digest), force=True)
    except docker.errors.ImageNotFound:
        return False
    return True
