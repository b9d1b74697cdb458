"""Writing files atomically: a temp file beside the destination, renamed into place."""

from __future__ import annotations

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


def copy_range(src_fd: int, dst: BinaryIO, size: int) -> None:
    """Copy ``size`` bytes from the start of ``src_fd`` into ``dst`` inside the kernel."""
    dst.flush()
    offset = 0
    while offset < size:
        n = os.copy_file_range(src_fd, dst.fileno(), size - offset, offset)
        if n == 0:
            raise OSError(f"short copy: {offset} of {size} bytes")
        offset += n
