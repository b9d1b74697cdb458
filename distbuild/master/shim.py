"""The shim Cargo runs, installed as ``<home>/bin/distbuild-wrap`` by ``cargo distbuild``.

Two builds of the same program (wire format in ``protocol.py``):

* **compiled** (``wrapper/distbuild_wrap.rs``, std-only Rust): built once per installation
  with ``rustc -O`` (about 0.7 s; ``scripts/setup`` does it ahead) into
  ``<sys.prefix>/share/cargo-distbuild/``, with the interpreter that starts the master baked
  in. A hit costs the process and the master's work: about 5 ms.
* **interpreted** (``wrapper/distbuild_wrap.py``): a launcher that starts Python with
  ``-I -S`` and imports the shim from precompiled bytecode, about 12 ms per hit. Used when the
  Rust source is not installed (a non-editable install) or rustc cannot build it; it is also
  the ``distbuild-wrap`` console script for setting ``RUSTC_WRAPPER`` by hand.

    path = install_shim(cfg)   # what RUSTC_WRAPPER should name
"""

from __future__ import annotations

import importlib.util
import logging
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import blake3

from distbuild.config import Config
from distbuild.errors import Unavailable

log = logging.getLogger(__name__)
NATIVE_DIR = Path(sys.prefix) / "share" / "cargo-distbuild"


def install_shim(cfg: Config) -> Path:
    """Install ``<home>/bin/distbuild-wrap`` (when changed) and return its path: the compiled
    shim when there is one, else the Python launcher."""
    launcher = cfg.home / "bin" / "distbuild-wrap"
    native = native_shim()
    if native is None:
        _install_launcher(launcher)
    elif not _same_file(native, launcher):
        launcher.parent.mkdir(parents=True, exist_ok=True)
        tmp = launcher.with_name(f".{launcher.name}.{os.getpid()}")
        shutil.copy2(native, tmp)
        os.replace(tmp, launcher)
    return launcher


def native_shim(build: bool = True) -> Path | None:
    """The compiled shim of this installation (built now if missing and ``build``), or None
    when the Rust source is not installed or rustc cannot build it."""
    source = _shim_source().with_suffix(".rs")
    try:
        code = source.read_bytes()
    except OSError:
        return None
    key = blake3.blake3(code + b"\0" + sys.executable.encode()).hexdigest()[:16]
    binary = NATIVE_DIR / f"distbuild-wrap-{key}"
    if binary.exists() or not build:
        return binary if binary.exists() else None
    try:
        NATIVE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_name(f".{binary.name}.{os.getpid()}")
        subprocess.run(["rustc", "-O", "--edition", "2021", "-C", "strip=symbols",
                        str(source), "-o", str(tmp)], check=True, capture_output=True,
                       timeout=300, env={**os.environ, "DISTBUILD_PYTHON": sys.executable})
        os.replace(tmp, binary)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("cannot build the compiled shim (using the Python one): %s", e)
        return None
    return binary


def _shim_source() -> Path:
    spec = importlib.util.find_spec("distbuild_wrap")
    if spec is None or spec.origin is None:
        raise Unavailable("the distbuild_wrap module is not installed")
    return Path(spec.origin)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _install_launcher(launcher: Path) -> None:
    """The launcher runs the interpreter with ``-I -S`` (no site-packages scan) and imports the
    shim from a private copy whose bytecode is compiled here, so no invocation pays for
    parsing it."""
    source = _shim_source().read_text()
    lib_dir = launcher.parent / "lib"
    module = lib_dir / "distbuild_wrap.py"
    content = (f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(lib_dir)!r})\n"
               "import distbuild_wrap\ndistbuild_wrap.run()\n")
    try:
        if module.read_text() == source and launcher.read_text() == content:
            return
    except (OSError, UnicodeDecodeError):
        pass
    lib_dir.mkdir(parents=True, exist_ok=True)
    _write_replace(module, source, 0o644)
    py_compile.compile(str(module), cfile=importlib.util.cache_from_source(str(module)),
                       doraise=True)
    _write_replace(launcher, content, 0o755)


def _write_replace(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


if __name__ == "__main__":  # scripts/setup: build the compiled shim ahead of the first build
    built = native_shim()
    print(f"compiled shim: {built}" if built else "compiled shim: not built (Python shim used)")
    sys.exit(0)
