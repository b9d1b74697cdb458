"""Writing files atomically (a temp file beside the destination, renamed into place), and
copying between files inside the kernel."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(dest: str | Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """An open temp file that replaces ``dest`` when the block ends without an exception.

    Readers see the old file or the whole new one; on an exception the temp file is removed
    and ``dest`` is left untouched.
    """
    dest = str(dest)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest) or ".",
                               prefix=f".{os.path.basename(dest)}.")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(dest: str | Path, chunks: Iterable[bytes], mode: int = 0o644) -> None:
    """Write ``chunks`` to ``dest`` atomically (see atomic_file)."""
    with atomic_file(dest, mode) as out:
        for chunk in chunks:
            out.write(chunk)


# copy_file_range refuses these where a plain copy works: another filesystem (EXDEV: the
# cache on a tmpfs or a second disk, a bind mount in a container), or a filesystem or kernel
# that does not offer it.
NO_COPY_RANGE = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def copy_range(src_fd: int, dst: BinaryIO, size: int) -> None:
    """Copy ``size`` bytes from the start of ``src_fd`` into ``dst`` inside the kernel.

    ``copy_file_range`` where it works (it can share extents); across filesystems or where it
    is not supported, ``sendfile``, still without the bytes passing through Python.
    """
    dst.flush()
    offset = 0
    while offset < size:
        try:
            n = os.copy_file_range(src_fd, dst.fileno(), size - offset, offset)
        except OSError as e:
            if e.errno not in NO_COPY_RANGE:
                raise
            _send_range(src_fd, dst.fileno(), offset, size)
            return
        if n == 0:
            raise OSError(f"short copy: {offset} of {size} bytes")
        offset += n


def _send_range(src_fd: int, dst_fd: int, offset: int, size: int) -> None:
    """Bytes ``offset..size`` of ``src_fd`` to ``dst_fd``'s position: sendfile, else read and
    write."""
    while offset < size:
        try:
            n = os.sendfile(dst_fd, src_fd, offset, size - offset)
        except OSError as e:
            if e.errno not in NO_COPY_RANGE:
                raise
            chunk = os.pread(src_fd, min(size - offset, 1 << 20), offset)
            n = os.write(dst_fd, chunk) if chunk else 0
        if n == 0:
            raise OSError(f"short copy: {offset} of {size} bytes")
        offset += n
