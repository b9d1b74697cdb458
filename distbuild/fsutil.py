"""Writing files atomically: a temp file beside the destination, renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomic(dest: str | Path, chunks: Iterable[bytes], mode: int = 0o644) -> None:
    """Write ``chunks`` to ``dest`` so readers see the old file or the whole new one.

    If iterating ``chunks`` raises (a blob failing verification, a broken download), the temp
    file is removed and ``dest`` is left untouched.
    """
    dest = str(dest)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest) or ".",
                               prefix=f".{os.path.basename(dest)}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
