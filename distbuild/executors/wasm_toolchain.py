"""Building WASI test programs: WAT through wasmtime, C through Debian's clang for wasm32-wasi,
Rust through Debian's rustc 1.63.

The toolchains are what ``scripts/setup.d/wasi-toolchain.sh`` provides: C system-wide
(``clang-14`` + ``lld-14`` + ``wasi-libc`` + ``libclang-rt-14-dev-wasm32``) or unpacked into
``build/wasi-toolchain``; Rust always unpacked into ``build/wasi-rust`` (linked with lld-14's
``wasm-ld``). Used by tests and benchmarks only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from distbuild.errors import ExecutorUnavailable

REPO = Path(__file__).resolve().parents[2]
LOCAL_PREFIX = REPO / "build" / "wasi-toolchain"
RUST_PREFIX = REPO / "build" / "wasi-rust"
_COMPILE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WasiCC:
    """A compiler that can target wasm32-wasi, with what it needs to find its pieces."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ("--target=wasm32-wasi", "-O1")

    def compile(self, source: Path, output: Path, *flags: str) -> Path:
        """Compile one source file to a WASI command module; raises ExecutorUnavailable."""
        cmd = [*self.argv, *self.flags, *flags, str(source), "-o", str(output)]
        env = {**os.environ, **self.env}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                              timeout=_COMPILE_TIMEOUT_S)
        if proc.returncode != 0:
            raise ExecutorUnavailable(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        return output


def find_wasi_cc() -> WasiCC | None:
    """The system clang-14 when its wasm32-wasi pieces are installed, else the unpacked one."""
    system = shutil.which("clang-14")
    if system and Path("/usr/lib/wasm32-wasi/libc.a").exists() and shutil.which("wasm-ld-14"):
        return WasiCC((system,))
    clang = LOCAL_PREFIX / "usr/lib/llvm-14/bin/clang"
    if clang.exists() and (LOCAL_PREFIX / "usr/lib/wasm32-wasi/libc.a").exists():
        path = f"{LOCAL_PREFIX / 'usr/bin'}:{LOCAL_PREFIX / 'usr/lib/llvm-14/bin'}"
        libs = str(LOCAL_PREFIX / "usr/lib/x86_64-linux-gnu")
        return WasiCC(
            (str(clang), f"--sysroot={LOCAL_PREFIX / 'usr'}"),
            {"PATH": f"{path}:{os.environ.get('PATH', '')}",
             "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"},
        )
    return None


def find_wasi_rustc() -> WasiCC | None:
    """Debian's rustc 1.63 unpacked in build/wasi-rust, linking with lld-14's wasm-ld."""
    rustc = RUST_PREFIX / "usr/bin/rustc"
    std = RUST_PREFIX / "usr/lib/rustlib/wasm32-wasi/lib"
    linker = shutil.which("wasm-ld-14") or str(LOCAL_PREFIX / "usr/bin/wasm-ld-14")
    if not (rustc.exists() and std.is_dir() and Path(linker).exists()):
        return None
    libs = str(RUST_PREFIX / "usr/lib/x86_64-linux-gnu")
    return WasiCC(
        (str(rustc), "--sysroot", str(RUST_PREFIX / "usr")),
        {"LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"},
        ("--edition=2021", "--target", "wasm32-wasi", "-O", "-C", "strip=debuginfo",
         "-C", f"linker={linker}"),
    )


def wat_to_wasm(wat: str) -> bytes:
    """WebAssembly text to a binary module (wasmtime's wat2wasm)."""
    return bytes(wasmtime.wat2wasm(wat))
