"""A root filesystem under construction: which host files go where in a toolchain image.

Host files keep their absolute paths, and every symlink met on the way to them (``/lib ->
usr/lib``, ``/usr/bin/cc -> /etc/alternatives/cc -> ...``) is recorded too, so the dynamic
loader, the compiler driver and linker scripts find things exactly where they look on the host.
Shared-library dependencies are found with ``ldd``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath

from distbuild.errors import ExecutorUnavailable

_MAX_LINKS = 40
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


@dataclass(frozen=True)
class Entry:
    """One member of the image: ``path`` is absolute inside the image."""

    path: str
    kind: str  # "file" | "dir" | "symlink" | "data"
    source: str = ""  # host file to copy (kind "file")
    target: str = ""  # symlink target (kind "symlink")
    mode: int = 0o755
    data: bytes = b""  # generated contents (kind "data")


class RootFs:
    """The entries of an image, keyed by path; later additions of the same path are ignored."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def _put(self, entry: Entry) -> None:
        self._parents(entry.path)
        self.entries.setdefault(entry.path, entry)

    def _parents(self, path: str) -> None:
        for parent in reversed(PurePosixPath(path).parents):
            p = str(parent)
            if p != "/" and p not in self.entries:
                self.entries[p] = Entry(p, "dir", mode=0o755)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._put(Entry(path, "dir", mode=mode))

    def add_data(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._put(Entry(path, "data", data=data, mode=mode))

    def add_file_as(self, path: str, source: str) -> None:
        """Copy host file ``source`` (symlinks followed) to ``path`` in the image."""
        self._put(Entry(path, "file", source=os.path.realpath(source),
                        mode=_file_mode(os.stat(source).st_mode)))

    def add_symlink(self, path: str, target: str) -> None:
        self._put(Entry(path, "symlink", target=target, mode=0o777))

    def add_host_path(self, path: str) -> str:
        """Add a host path at the same place, with every symlink on the way; returns its real path.

        Raises:
            ExecutorUnavailable: the path does not exist or loops.
        """
        todo = list(PurePosixPath(os.path.abspath(path)).parts[1:])
        cur = "/"
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                cur = os.path.dirname(cur)  # cur never holds a symlink, so this is exact
                continue
            nxt = os.path.join(cur, part)
            try:
                st = os.lstat(nxt)
            except OSError as e:
                raise ExecutorUnavailable(f"toolchain file {path} is missing ({e})") from e
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    raise ExecutorUnavailable(f"too many symlinks resolving {path}")
                target = os.readlink(nxt)
                self.add_symlink(nxt, target)
                todo = list(PurePosixPath(target).parts) + todo
                if target.startswith("/"):
                    cur = "/"
                    todo = todo[1:]
                continue
            if stat.S_ISDIR(st.st_mode):
                self._put(Entry(nxt, "dir", mode=0o755))
            elif todo:
                raise ExecutorUnavailable(f"{nxt} is not a directory (resolving {path})")
            else:
                self._put(Entry(nxt, "file", source=nxt, mode=_file_mode(st.st_mode)))
            cur = nxt
        return cur

    def add_with_libraries(self, path: str, skip_prefix: str = "") -> None:
        """Add a host file and (if it is a dynamic ELF object) every library ``ldd`` lists."""
        real = self.add_host_path(path)
        for lib in shared_libraries(real):
            if not (skip_prefix and lib.startswith(skip_prefix)):
                self.add_host_path(lib)

    def host_files(self) -> list[str]:
        """Every host file copied into the image (for change detection)."""
        return sorted(e.source for e in self.entries.values() if e.kind == "file")


def _file_mode(st_mode: int) -> int:
    return 0o755 if st_mode & 0o111 else 0o644


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def shared_libraries(path: str, provided: Collection[str] = ()) -> list[str]:
    """Absolute paths of the shared libraries (and the loader) a dynamic ELF file needs.

    Args:
        provided: library names that ``ldd`` may fail to find because the package brings
            them (e.g. rust-objcopy's libLLVM, which its RUNPATH does not reach).
    """
    if not is_elf(path):
        return []
    proc = subprocess.run(["ldd", path], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    if proc.returncode != 0:  # static executables: "not a dynamic executable"
        return []
    missing = [ln.split()[0] for ln in proc.stdout.splitlines()
               if "=> not found" in ln and ln.split()[0] not in provided]
    if missing:
        raise ExecutorUnavailable(f"{path} needs libraries that are not installed: {missing}")
    libs = []
    for line in proc.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if m:
            libs.append(m.group(1))
    return libs
