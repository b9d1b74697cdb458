"""The cache key of a rustc compilation.

A key is built in two stages so that a lookup never runs rustc (ccache's "direct mode"):

* ``direct_key`` covers everything known from the command line before compiling;
* ``result_key`` adds the input manifest recorded when the action first compiled (every source
  file rustc read, from dep-info, and every ``env-dep`` variable), re-verified by content.

Inputs, in hashing order (bump KEY_VERSION whenever this list or its encoding changes):
  1. KEY_VERSION
  2. toolchain identity: ``rustc -vV`` and a digest of the sysroot's libraries
  3. the working directory, path-normalized
  4. every argument as (canonical flag, value), path-normalized, minus ``-C incremental``
     (incremental state is a local speed-up that does not change what the crate means; see
     README "Incremental builds") and the presentation flags ``--diagnostic-width`` and
     ``--color`` (Cargo passes the terminal's width only to a terminal)
  5. the input source path, path-normalized
  6. environment: every CARGO_* variable but those in ENV_EXCLUDED, plus ENV_RUSTC_READS,
     path-normalized, sorted by name (proc-macros may read any of them untracked)
  7. the contents of every ``--extern`` file
  8. for each ``-l`` library found in a ``-L native|all|crate`` dir, its contents
  9. for linked crate types (bin, dylib, cdylib, proc-macro, staticlib, --test): the linker's
     identity (``-C linker`` or ``cc`` from PATH, by contents) and ``-C link-arg(s)`` (in 4)
 10. the target spec file's contents when ``--target`` names a .json file
 -- result_key adds --
 11. (path-normalized source path, contents digest) for every dep-info source, sorted
 12. (name, path-normalized value or unset) for every env-dep line
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import blake3

from distbuild.rustc.args import Compilation
from distbuild.rustc.paths import PathMap

KEY_VERSION = "distbuild-rustc-key-2"

# Variables Cargo sets that do not change what rustc produces (or that vary per machine).
ENV_EXCLUDED = frozenset({
    "CARGO_MAKEFLAGS", "CARGO_BUILD_JOBS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR",
    "CARGO_HOME", "CARGO", "CARGO_TERM_COLOR", "CARGO_TERM_PROGRESS_WHEN",
    "CARGO_TERM_PROGRESS_WIDTH", "CARGO_TERM_VERBOSE", "CARGO_TERM_QUIET",
})
ENV_EXCLUDED_PREFIXES = ("CARGO_REGISTRIES_", "CARGO_HTTP_", "CARGO_NET_", "CARGO_PROFILE_")
# Variables rustc itself (or the linker it drives) reads.
ENV_RUSTC_READS = ("RUSTC_BOOTSTRAP", "OUT_DIR", "LIBRARY_PATH", "LD_RUN_PATH",
                   "SOURCE_DATE_EPOCH", "RUSTC_FORCE_INCREMENTAL", "RUST_MIN_STACK")


@dataclass(frozen=True)
class Manifest:
    """The inputs discovered when an action first compiled (all path-normalized)."""

    sources: tuple[str, ...]
    env_deps: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {"sources": list(self.sources), "env_deps": list(self.env_deps)}


def _feed(h: blake3.blake3, *parts: str) -> None:
    for p in parts:
        b = p.encode("utf-8", "surrogateescape")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)


def keyed_env(env: dict[str, str]) -> list[tuple[str, str]]:
    """The environment entries that go into the key (input 6), unnormalized."""
    out = []
    for name, value in env.items():
        if name.startswith("CARGO_"):
            if name in ENV_EXCLUDED or name.startswith(ENV_EXCLUDED_PREFIXES):
                continue
        elif name not in ENV_RUSTC_READS:
            continue
        out.append((name, value))
    out.sort()
    return out


def native_libs(comp: Compilation) -> list[tuple[str, str]]:
    """(``-l`` spec, absolute file) for every linked library found in a ``-L`` directory."""
    dirs = [p for kind, p in comp.lib_search if kind in ("native", "all", "crate")]
    found = []
    for kind, spec in comp.link_libs:
        name = spec.partition(":")[0]
        for d in dirs:
            for candidate in (f"lib{name}.a", f"lib{name}.so", f"{name}.lib"):
                path = os.path.join(d, candidate)
                if os.path.isfile(path):
                    found.append((f"{kind}={spec}", path))
                    break
            else:
                continue
            break
    return found


def find_linker(comp: Compilation, env: dict[str, str]) -> str | None:
    linker = comp.codegen_value("linker") or "cc"
    if os.sep in linker:
        return os.path.join(comp.cwd, linker)
    return shutil.which(linker, path=env.get("PATH", os.defpath))


def direct_key(
    comp: Compilation,
    env: dict[str, str],
    paths: PathMap,
    toolchain_id: str,
    digest_of: Callable[[str], str],
) -> str:
    """Inputs 1-10 (see the module docstring). ``digest_of(path)`` hashes a file by contents."""
    h = blake3.blake3()
    norm = paths.normalize
    _feed(h, KEY_VERSION, toolchain_id, norm(comp.cwd))  # 1, 2, 3
    for flag, value in comp.key_tokens:  # 4
        _feed(h, "arg", flag, norm(value))
    _feed(h, "input", norm(comp.input))  # 5
    for name, value in keyed_env(env):  # 6
        _feed(h, "env", name, norm(value))
    for name, path in comp.externs:  # 7
        _feed(h, "extern", name, digest_of(path) if path else "")
    for spec, path in native_libs(comp):  # 8
        _feed(h, "native", spec, digest_of(path))
    if comp.is_linked:  # 9
        linker = find_linker(comp, env)
        _feed(h, "linker", digest_of(linker) if linker else "missing")
    if comp.target and comp.target.endswith(".json"):  # 10
        _feed(h, "target-spec", digest_of(os.path.join(comp.cwd, comp.target)))
    return h.hexdigest()


def result_key(direct: str, manifest: Manifest, source_digests: list[str],
               env_values: list[str | None]) -> str:
    """Inputs 11-12 on top of the direct key."""
    h = blake3.blake3()
    _feed(h, "result", direct)
    for path, digest in zip(manifest.sources, source_digests, strict=True):  # 11
        _feed(h, "src", path, digest)
    for name, value in zip(manifest.env_deps, env_values, strict=True):  # 12
        _feed(h, "env-dep", name, "\0unset" if value is None else value)
    return h.hexdigest()
