"""Path independence: rewriting machine-specific roots to placeholders and back.

Three roots are recognised: the Cargo target directory, the workspace (the directory Cargo runs
rustc in for workspace members) and CARGO_HOME. Keys, recorded manifests, dep-info files and
captured stdout/stderr are stored with placeholders, so the same project checked out elsewhere,
or built by another user, hits and is restored with its own paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

WORKSPACE = "@@WORKSPACE@@"
TARGET = "@@TARGET@@"
CARGO_HOME = "@@CARGO_HOME@@"
_PLACEHOLDERS = re.compile("@@(WORKSPACE|TARGET|CARGO_HOME)@@")
# Where each root is remapped in compiled artifacts (rustc's --remap-path-prefix, C compilers'
# -ffile-prefix-map), so that they do not depend on the checkout.
REMAP_TO = {WORKSPACE: ".", TARGET: "/distbuild/target", CARGO_HOME: "/distbuild/cargo-home"}
# A root only matches where a path component ends.
_END = r"(?![A-Za-z0-9._+-])"


@dataclass(frozen=True)
class PathMap:
    roots: tuple[tuple[str, str], ...]  # (absolute root, placeholder), longest root first

    def __post_init__(self) -> None:
        pattern = "|".join(re.escape(root) + _END for root, _ in self.roots)
        object.__setattr__(self, "_re", re.compile(pattern) if pattern else None)
        object.__setattr__(self, "_to", {root: ph for root, ph in self.roots})
        object.__setattr__(self, "_from", {ph: root for root, ph in self.roots})

    def normalize(self, text: str) -> str:
        """Replace every root in ``text`` with its placeholder."""
        regex: re.Pattern[str] | None = self._re  # type: ignore[attr-defined]
        if regex is None:
            return text
        to: dict[str, str] = self._to  # type: ignore[attr-defined]
        return regex.sub(lambda m: to[m.group(0)], text)

    def denormalize(self, text: str) -> str | None:
        """Replace placeholders with this machine's roots; None if one has no root here."""
        back: dict[str, str] = self._from  # type: ignore[attr-defined]
        missing = False

        def sub(m: re.Match[str]) -> str:
            nonlocal missing
            root = back.get(m.group(0))
            if root is None:
                missing = True
                return m.group(0)
            return root

        out = _PLACEHOLDERS.sub(sub, text)
        return None if missing else out

    def denormalize_bytes(self, data: bytes) -> bytes | None:
        if b"@@" not in data:
            return data
        text = self.denormalize(data.decode("utf-8", "surrogateescape"))
        return None if text is None else text.encode("utf-8", "surrogateescape")

    def normalize_bytes(self, data: bytes) -> bytes:
        return self.normalize(data.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape")

    def root(self, placeholder: str) -> str | None:
        return self._from.get(placeholder)  # type: ignore[attr-defined, no-any-return]


@lru_cache(maxsize=256)
def find_target_dir(out_dir: str) -> str | None:
    """The Cargo target directory containing ``out_dir`` (Cargo marks it with CACHEDIR.TAG)."""
    d = out_dir
    for _ in range(8):
        if os.path.isfile(os.path.join(d, "CACHEDIR.TAG")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@lru_cache(maxsize=256)
def path_map_for(cwd: str, out_dir: str, cargo_home: str) -> PathMap:
    """The roots for an invocation in ``cwd`` writing into ``out_dir``."""
    roots: list[tuple[str, str]] = []
    target = find_target_dir(out_dir)
    if target:
        roots.append((target, TARGET))
    if cargo_home:
        roots.append((os.path.normpath(cargo_home), CARGO_HOME))
    if not any(_inside(cwd, r) for r, _ in roots) and cwd != "/":
        roots.append((cwd, WORKSPACE))
    roots.sort(key=lambda r: -len(r[0]))
    return PathMap(tuple(roots))


def c_prefix_map_flags(workspace: str, target: str, cargo_home: str) -> str:
    """``-ffile-prefix-map`` flags mapping the roots like rustc's remapping (GCC and clang use
    the last matching map, so a root nested in another comes after it)."""
    roots = sorted([(workspace, WORKSPACE), (target, TARGET), (cargo_home, CARGO_HOME)],
                   key=lambda r: len(r[0]))
    return " ".join(f"-ffile-prefix-map={root}={REMAP_TO[ph]}" for root, ph in roots if root)


def default_cargo_home(env: dict[str, str]) -> str:
    home = env.get("CARGO_HOME")
    if home:
        return home
    return os.path.join(env.get("HOME", os.path.expanduser("~")), ".cargo")
