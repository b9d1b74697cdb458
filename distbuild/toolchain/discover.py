"""What a toolchain is made of: rustc and its sysroot, and the system linker that links for it.

The Rust part is taken from the sysroot and placed under :data:`IMAGE_ROOT` in the image, so a
toolchain's identity does not depend on where the client installed it. Left out, to keep the
archive small: docs, ``rust-src``, cargo/clippy/rustfmt/rustdoc, rustup manifests, debugger
scripts and the sanitizer runtimes (usable only with nightly ``-Zsanitizer``).

The linker part (``cc``, ``collect2``, ``ld``, the LTO plugin, crt files, libgcc, libc's
development files) keeps its host paths; it is found by asking the driver itself:
``cc -###`` prints the exact ``collect2`` command for an executable and a shared object, and
``cc -print-file-name=libX.so`` finds each library rustc links against. Linker scripts such as
``libc.so`` are followed to the files they name.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from distbuild.errors import ExecutorUnavailable
from distbuild.toolchain.rootfs import RootFs, is_elf, shared_libraries

IMAGE_ROOT = "/toolchain"
RUSTC_IN_IMAGE = f"{IMAGE_ROOT}/bin/rustc"
# Libraries rustc's std and common -sys crates link: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc.
LINK_LIBS = ("c", "c_nonshared", "m", "mvec", "rt", "pthread", "dl", "util", "gcc", "gcc_s",
             "gcc_eh", "ssp_nonshared", "z")
_SKIP_RUSTLIB_FILE = re.compile(r"^librustc-\w+_rt\.\w+\.a$")  # sanitizer runtimes
_SCRIPT_WORD = re.compile(r"[^\s()]+")
_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}


def find_sysroot(rustc: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> Path:
    """The sysroot of ``rustc`` (a rustup proxy is asked, with the caller's env and cwd)."""
    real = os.path.realpath(rustc)
    if not os.path.isfile(real):
        raise ExecutorUnavailable(f"rustc not found: {rustc}")
    guess = Path(real).parent.parent
    if Path(real).name.startswith("rustc") and (guess / "lib" / "rustlib").is_dir():
        return guess
    proc = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True,
                          env=dict(env) if env is not None else None, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise ExecutorUnavailable(f"{rustc} --print sysroot failed: {proc.stderr.strip()}")
    return Path(proc.stdout.strip())


def sysroot_files(sysroot: Path, targets: Iterable[str] | None = None) -> Iterator[Path]:
    """The files of the sysroot that go into the image, as paths relative to the sysroot.

    Args:
        targets: the target triples whose std to include; None = every installed target.
    """
    yield Path("bin/rustc")
    for entry in sorted(os.scandir(sysroot / "lib"), key=lambda e: e.name):
        if not entry.is_dir(follow_symlinks=False):
            yield Path("lib") / entry.name  # librustc_driver, libLLVM and its linker script
    rustlib = sysroot / "lib" / "rustlib"
    wanted = set(targets) if targets is not None else None
    for tdir in sorted(p for p in rustlib.iterdir() if (p / "lib").is_dir()):
        if wanted is not None and tdir.name not in wanted:
            continue
        for sub in ("lib", "bin", "codegen-backends"):
            base = tdir / sub
            if not base.is_dir():
                continue
            for root, dirs, files in os.walk(base):
                dirs.sort()
                for name in sorted(files):
                    if sub == "lib" and _SKIP_RUSTLIB_FILE.match(name):
                        continue
                    yield (Path(root) / name).relative_to(sysroot)


def add_rust(fs: RootFs, sysroot: Path, targets: Iterable[str] | None = None) -> list[str]:
    """Put the sysroot under IMAGE_ROOT plus the system libraries it needs; returns host files."""
    added: list[str] = []
    own_libs = {p.name for p in (sysroot / "lib").iterdir()}
    for rel in sysroot_files(sysroot, targets):
        src = sysroot / rel
        dest = f"{IMAGE_ROOT}/{rel.as_posix()}"
        target = os.readlink(src) if src.is_symlink() else ""
        if target and not target.startswith("/") and ".." not in Path(target).parts:
            fs.add_symlink(dest, target)  # e.g. versioned .so names
        else:
            fs.add_file_as(dest, str(src))
        added.append(str(src))
        real = os.path.realpath(src)
        if is_elf(real):
            for lib in shared_libraries(real, own_libs):
                if not lib.startswith(str(sysroot) + "/"):
                    fs.add_host_path(lib)
    return added


def _cc(linker: str, *args: str) -> str:
    proc = subprocess.run([linker, *args], capture_output=True, text=True, env=_CLEAN_ENV,
                          check=False)
    if proc.returncode != 0:
        raise ExecutorUnavailable(f"{linker} {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout + proc.stderr


def _driver_paths(linker: str) -> set[str]:
    """Absolute paths in the collect2 commands the driver would run (``cc -###``)."""
    found: set[str] = set()
    for mode in (["-pie"], ["-no-pie"], ["-shared"], ["-static-pie"]):
        try:
            out = _cc(linker, "-###", "-m64", *mode, "x.o", "-o", "x")
        except ExecutorUnavailable:
            continue  # e.g. a driver without -static-pie
        for line in out.splitlines():
            if not line.startswith(" ") or ("collect2" not in line and " ld" not in line):
                continue
            for word in shlex.split(line):
                word = word.split("=", 1)[1] if word.startswith("-plugin-opt=") else word
                if word.startswith("/") and os.path.isfile(word):
                    found.add(word)
    return found


def _script_inputs(path: str, linker: str) -> list[str]:
    """Files a GNU ld script (``libc.so``, ``libm.so``, ``libgcc_s.so``) names."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\x7fELF") or b"GROUP" not in head and b"INPUT" not in head:
        return []
    text = re.sub(r"/\*.*?\*/", " ", head.decode(errors="replace"), flags=re.S)
    out = []
    for word in _SCRIPT_WORD.findall(text):
        if word.startswith("/"):
            out.append(word)
        elif word.startswith("lib") and ".so" in word:
            local = os.path.join(os.path.dirname(path), word)
            out.append(local if os.path.exists(local) else _cc(linker, f"-print-file-name={word}")
                       .strip())
    return [p for p in out if p.startswith("/") and os.path.exists(p)]


def find_linker(name: str = "cc", path_env: str | None = None) -> str:
    found = shutil.which(name, path=path_env or _CLEAN_ENV["PATH"])
    if not found:
        raise ExecutorUnavailable(f"no linker driver {name!r} on PATH (install gcc)")
    return found


def add_linker(fs: RootFs, linker: str) -> None:
    """Add the C linker driver at ``linker`` and everything it needs to link Rust outputs."""
    files: set[str] = {linker}
    files |= _driver_paths(linker)
    ld = _cc(linker, "-print-prog-name=ld").strip()
    ld_path = ld if ld.startswith("/") else shutil.which(ld, path=_CLEAN_ENV["PATH"])
    if ld_path:
        files.add(ld_path)
    for lib in LINK_LIBS:
        for ext in (".so", ".a"):
            p = _cc(linker, f"-print-file-name=lib{lib}{ext}").strip()
            if p.startswith("/") and os.path.exists(p):
                files.add(os.path.normpath(p))
                files.update(_script_inputs(p, linker))
    for f in sorted(files):
        fs.add_with_libraries(f)
