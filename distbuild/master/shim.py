"""The shim Cargo runs, installed as ``<home>/bin/distbuild-wrap`` by ``cargo distbuild``.

Two builds of the same program (wire format in ``protocol.py``):

* **compiled** (``wrapper/distbuild_wrap.rs``, std-only Rust): built once per installation
  with ``rustc -O`` (about 0.7 s; ``scripts/setup`` does it ahead) into
  ``<sys.prefix>/share/cargo-distbuild/``, with the interpreter that starts the master baked
  in. A hit costs the process and the master's work: about 5 ms.
* **interpreted** (``wrapper/distbuild_wrap.py``): a launcher that starts Python with
  ``-I -S`` and imports the shim from precompiled bytecode, about 12 ms per hit. Used when
  rustc cannot build the compiled one.

The Rust source is installed as package data (``distbuild._shim_source``) by every kind of
install, a wheel included. When ``<sys.prefix>/share`` is not writable (a system or ``--user``
install), the binary goes to ``$DISTBUILD_HOME/native/`` instead.

The ``distbuild-wrap`` command on PATH (for ``RUSTC_WRAPPER=distbuild-wrap`` by hand) is pip's
console script, which starts Python with site-packages: ~40 ms per invocation. ``scripts/setup``
replaces it with the compiled shim (``install_command``).

    path = install_shim(cfg)   # what RUSTC_WRAPPER should name
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import blake3

from distbuild.config import Config, default_home
from distbuild.errors import Unavailable

log = logging.getLogger(__name__)
NATIVE_DIR = Path(sys.prefix) / "share" / "cargo-distbuild"


def install_shim(cfg: Config) -> Path:
    """Install ``<home>/bin/distbuild-wrap`` (when changed) and return its path: the compiled
    shim when there is one, else the Python launcher."""
    launcher = cfg.home / "bin" / "distbuild-wrap"
    native = native_shim()
    if native is None:
        install_launcher(launcher)
    else:
        _copy_if_changed(native, launcher)
    return launcher


def install_command() -> Path | None:
    """Put the compiled shim in place of the ``distbuild-wrap`` console script of this
    installation (a venv's); returns the compiled shim's path, None when there is none."""
    native = native_shim()
    if native is None:
        return None
    command = Path(sys.prefix) / "bin" / "distbuild-wrap"
    if not command.exists():
        return native  # the scripts live elsewhere (a --user install): leave PATH alone
    _copy_if_changed(native, command)
    return command


def native_shim(build: bool = True) -> Path | None:
    """The compiled shim of this installation (built now if missing and ``build``), or None
    when the Rust source is missing or rustc cannot build it."""
    source = rust_source()
    try:
        code = source.read_bytes()
    except OSError:
        return None
    key = blake3.blake3(code + b"\0" + sys.executable.encode()).hexdigest()[:16]
    name = f"distbuild-wrap-{key}"
    dirs = (NATIVE_DIR, default_home() / "native")
    for d in dirs:
        if (d / name).exists():
            return d / name
    if not build:
        return None
    error: Exception | None = None
    for d in dirs:  # the installation's own directory, else a per-user one
        binary = d / name
        tmp = binary.with_name(f".{name}.{os.getpid()}")
        try:
            d.mkdir(parents=True, exist_ok=True)
            subprocess.run(["rustc", "-O", "--edition", "2021", "-C", "strip=symbols",
                            str(source), "-o", str(tmp)], check=True, capture_output=True,
                           timeout=300, env={**os.environ, "DISTBUILD_PYTHON": sys.executable})
            os.replace(tmp, binary)
            return binary
        except (OSError, subprocess.SubprocessError) as e:
            error = e
    log.warning("cannot build the compiled shim (using the Python one): %s", error)
    return None


def rust_source() -> Path:
    """``distbuild_wrap.rs`` as installed (package data; in a checkout, a link to wrapper/)."""
    return Path(str(importlib.resources.files("distbuild._shim_source")
                    .joinpath("distbuild_wrap.rs")))


def _shim_source() -> Path:
    spec = importlib.util.find_spec("distbuild_wrap")
    if spec is None or spec.origin is None:
        raise Unavailable("the distbuild_wrap module is not installed")
    return Path(spec.origin)


def _copy_if_changed(src: Path, dest: Path) -> None:
    try:
        if src.read_bytes() == dest.read_bytes():
            return
    except OSError:
        pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def install_launcher(launcher: Path) -> None:
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
    built = install_command()
    print(f"compiled shim: {built}" if built else "compiled shim: not built (Python shim used)")
    sys.exit(0)
