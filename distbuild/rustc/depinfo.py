"""Parsing the Makefile-style dep-info (``.d``) files rustc writes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class DepInfo:
    sources: list[str] = field(default_factory=list)  # absolute paths, in rustc's order
    env_deps: list[tuple[str, str | None]] = field(default_factory=list)  # (name, value)
    # Directories a source path walks through before a ".." (``a/b/../c.rs`` needs ``a/b``):
    # a sandbox must create them or rustc cannot resolve the path as written.
    via_dirs: list[str] = field(default_factory=list)


def _unescape(token: str) -> str:
    return token.replace("\\ ", " ").replace("\\#", "#").replace("$$", "$")


def _split_paths(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == " ":
            current += " "
            i += 2
            continue
        if c == " ":
            if current:
                parts.append(_unescape(current))
            current = ""
        else:
            current += c
        i += 1
    if current:
        parts.append(_unescape(current))
    return parts


def parse_dep_info(text: str, cwd: str) -> DepInfo:
    """Sources of the first rule (made absolute against ``cwd``) and ``# env-dep:`` lines."""
    info = DepInfo()
    seen_rule = False
    for line in text.splitlines():
        if line.startswith("# env-dep:"):
            name, eq, value = line[len("# env-dep:"):].partition("=")
            info.env_deps.append((name, _unescape_env(value) if eq else None))
            continue
        if not line or line.startswith("#") or seen_rule:
            continue
        target, sep, deps = line.partition(": ")
        if not sep:
            continue
        seen_rule = True
        raw = [os.path.join(cwd, p) for p in _split_paths(deps)]
        info.sources = [os.path.normpath(p) for p in raw]
        info.via_dirs = sorted({d for p in raw if "/../" in p for d in _dirs_before_dotdot(p)})
    return info


def _dirs_before_dotdot(path: str) -> list[str]:
    parts = path.split("/")
    return [os.path.normpath("/".join(parts[:i])) for i, part in enumerate(parts)
            if part == ".." and i > 0]


def _unescape_env(value: str) -> str:
    # rustc escapes backslashes and newlines in env-dep values.
    return value.replace("\\n", "\n").replace("\\\\", "\\")
