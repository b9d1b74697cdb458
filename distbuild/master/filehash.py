"""Content digests of input files, memoized by stat signature (ccache's direct-mode idea).

A file whose stat signature (mtime, ctime, size, inode) is unchanged is not re-read. A file
modified within RACY_S of being hashed is not memoized: a second write inside the same
timestamp tick could otherwise go unnoticed.
"""

from __future__ import annotations

import os
import threading
import time

from distbuild.cas.digest import digest_file

RACY_S = 1.0
_Sig = tuple[int, int, int, int]


def _signature(st: os.stat_result) -> _Sig:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class FileHasher:
    def __init__(self) -> None:
        self._memo: dict[str, tuple[_Sig, str]] = {}
        self._lock = threading.Lock()

    def digest(self, path: str) -> str:
        """BLAKE3 hex of the file's contents. Raises OSError if it cannot be read."""
        st = os.stat(path)
        sig = _signature(st)
        memo = self._memo.get(path)
        if memo is not None and memo[0] == sig:
            return memo[1]
        value = digest_file(path).hash
        if time.time_ns() - st.st_mtime_ns > RACY_S * 1e9:
            with self._lock:
                self._memo[path] = (sig, value)
        return value

    def prime(self, path: str, digest: str) -> None:
        """Record the digest of a file we have just written ourselves."""
        try:
            sig = _signature(os.stat(path))
        except OSError:
            return
        with self._lock:
            self._memo[path] = (sig, digest)
