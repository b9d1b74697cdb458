"""rustc's command line, parsed from a declarative flag table.

``classify(argv, cwd)`` sorts an invocation into one of three outcomes (return values, never
exceptions): ``Passthrough`` (not a compilation: ``-vV``, ``--print``, ...), ``NotCacheable``
(a compilation we run but do not cache, with a named reason) or ``Compilation`` (everything the
cache key and the output list need).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum


class Role(Enum):
    """What a flag's value means to us."""

    PLAIN = "plain"  # part of the key, nothing else
    PASSTHROUGH = "passthrough"  # the invocation is not a compilation
    CRATE_NAME = "crate-name"
    CRATE_TYPE = "crate-type"
    EMIT = "emit"
    OUT_DIR = "out-dir"
    OUTPUT = "output"  # -o
    CODEGEN = "codegen"  # -C key=value
    EXTERN = "extern"
    LIB_SEARCH = "lib-search"  # -L [kind=]path
    LINK_LIB = "link-lib"  # -l [kind[:mods]=]name[:rename]
    TARGET = "target"
    SYSROOT = "sysroot"
    UNSTABLE = "unstable"  # -Z
    PRESENTATION = "presentation"  # how diagnostics look, not what is built: not in the key


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    takes_value: bool
    role: Role = Role.PLAIN


# The flag table. Short flags with values also accept the glued form (-Cfoo=bar, -Ldir).
FLAGS: tuple[Flag, ...] = (
    Flag(("--print",), True, Role.PASSTHROUGH),
    Flag(("--explain",), True, Role.PASSTHROUGH),
    Flag(("-V", "--version", "-h", "--help"), False, Role.PASSTHROUGH),
    Flag(("-v", "--verbose"), False),
    Flag(("--crate-name",), True, Role.CRATE_NAME),
    Flag(("--crate-type",), True, Role.CRATE_TYPE),
    Flag(("--emit",), True, Role.EMIT),
    Flag(("--out-dir",), True, Role.OUT_DIR),
    Flag(("-o",), True, Role.OUTPUT),
    Flag(("-C", "--codegen"), True, Role.CODEGEN),
    Flag(("--extern",), True, Role.EXTERN),
    Flag(("-L",), True, Role.LIB_SEARCH),
    Flag(("-l",), True, Role.LINK_LIB),
    Flag(("--target",), True, Role.TARGET),
    Flag(("--sysroot",), True, Role.SYSROOT),
    Flag(("-Z",), True, Role.UNSTABLE),
    # Cargo passes --diagnostic-width only when stderr is a terminal (its width): a resized
    # terminal or a piped CI build must not miss. Replay shows the first width's rendering.
    Flag(("--diagnostic-width", "--color"), True, Role.PRESENTATION),
    Flag(("--edition", "--cfg", "--check-cfg", "--cap-lints", "--error-format", "--json",
          "--remap-path-prefix", "--env-set",
          "-W", "--warn", "-A", "--allow", "-D", "--deny", "-F", "--forbid", "--force-warn",
          "--crate-attr", "--extern-location", "--remap-path-scope"), True),
    Flag(("-g", "-O", "--test"), False),
)

_BY_NAME: dict[str, Flag] = {name: flag for flag in FLAGS for name in flag.names}
_GLUED_SHORT = tuple(n for n in _BY_NAME if len(n) == 2 and _BY_NAME[n].takes_value)

# Crate types whose output is produced by the system linker.
LINKED_CRATE_TYPES = frozenset({"bin", "dylib", "cdylib", "proc-macro", "staticlib"})
CRATE_TYPES = LINKED_CRATE_TYPES | {"lib", "rlib"}


@dataclass(frozen=True)
class Passthrough:
    """Not a compilation: run rustc as it is."""

    reason: str


@dataclass(frozen=True)
class NotCacheable:
    """A compilation we run but cannot cache, with a named reason."""

    reason: str


@dataclass
class Compilation:
    """A cacheable rustc compilation, as parsed."""

    rustc: str
    args: list[str]  # everything after the rustc path, verbatim
    cwd: str
    input: str
    crate_name: str
    crate_types: list[str]
    emit: dict[str, str | None]  # kind -> explicit path (None = default name in out_dir)
    out_dir: str  # absolute
    output: str | None  # -o, absolute
    extra_filename: str
    codegen: list[tuple[str, str]]
    externs: list[tuple[str, str | None]]  # (name, path) ; path None = sysroot crate
    lib_search: list[tuple[str, str]]  # (kind, absolute path)
    link_libs: list[tuple[str, str]]  # (kind, name)
    target: str | None
    is_test: bool
    key_tokens: list[tuple[str, str]] = field(default_factory=list)  # (flag, value) for the key
    incremental: str | None = None

    @property
    def is_linked(self) -> bool:
        return self.is_test or bool(LINKED_CRATE_TYPES.intersection(self.crate_types))

    def codegen_value(self, key: str) -> str | None:
        value = None
        for k, v in self.codegen:
            if k == key:
                value = v
        return value


Classified = Passthrough | NotCacheable | Compilation


def _split(argv: list[str]) -> tuple[list[tuple[Flag | None, str, str]], str | None]:
    """Tokenize into (flag, spelling, value) triples; flag None = a positional argument."""
    out: list[tuple[Flag | None, str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "-vV" or arg == "-Vv":
            out.append((_BY_NAME["-V"], "-V", ""))
            continue
        name, eq, glued = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = _BY_NAME.get(name)
        if flag is None and not arg.startswith("--") and arg[:2] in _GLUED_SHORT and len(arg) > 2:
            flag, name, glued, eq = _BY_NAME[arg[:2]], arg[:2], arg[2:], "="
        if flag is None:
            if arg.startswith("-") and arg != "-":
                return out, f"unknown-flag:{name}"
            out.append((None, "", arg))
            continue
        if not flag.takes_value:
            if eq:
                return out, f"unexpected-value:{name}"
            out.append((flag, name, ""))
        elif eq:
            out.append((flag, name, glued))
        elif i < len(argv):
            out.append((flag, name, argv[i]))
            i += 1
        else:
            return out, f"missing-value:{name}"
    return out, None


def classify(argv: list[str], cwd: str) -> Classified:
    """Classify ``argv`` (``argv[0]`` is the rustc path) run in ``cwd``."""
    tokens, error = _split(argv[1:])
    if any(f is not None and f.role is Role.PASSTHROUGH for f, _, _ in tokens):
        return Passthrough("not-compilation")
    if error:
        return NotCacheable(error)

    def absolute(p: str) -> str:
        return os.path.normpath(os.path.join(cwd, p))

    inputs: list[str] = []
    crate_name = ""
    crate_types: list[str] = []
    emit: dict[str, str | None] = {}
    out_dir = output = target = incremental = None
    extra = ""
    codegen: list[tuple[str, str]] = []
    externs: list[tuple[str, str | None]] = []
    lib_search: list[tuple[str, str]] = []
    link_libs: list[tuple[str, str]] = []
    key_tokens: list[tuple[str, str]] = []
    is_test = False
    for flag, name, value in tokens:
        if flag is None:
            inputs.append(value)
            continue
        role = flag.role
        canonical = flag.names[0]
        if role is Role.CRATE_NAME:
            crate_name = value
        elif role is Role.CRATE_TYPE:
            crate_types.extend(t.strip() for t in value.split(",") if t.strip())
        elif role is Role.EMIT:
            for part in value.split(","):
                kind, _, path = part.partition("=")
                emit[kind.strip()] = absolute(path) if path else None
        elif role is Role.OUT_DIR:
            out_dir = absolute(value)
        elif role is Role.OUTPUT:
            output = absolute(value)
        elif role is Role.CODEGEN:
            k, sep, v = value.partition("=")
            k = k.strip().replace("_", "-")
            if k == "incremental":
                incremental = v
                continue  # keyed out: see distbuild/rustc/key.py
            if k == "extra-filename":
                extra = v
            codegen.append((k, v))
            value = f"{k}={v}" if sep else k
        elif role is Role.EXTERN:
            n, _, p = value.partition("=")
            externs.append((n, absolute(p) if p else None))
        elif role is Role.LIB_SEARCH:
            kind, sep, p = value.partition("=")
            if not sep:
                kind, p = "all", value
            lib_search.append((kind, absolute(p)))
        elif role is Role.LINK_LIB:
            kind, sep, n = value.partition("=")
            if not sep:
                kind, n = "", value
            link_libs.append((kind, n))
        elif role is Role.TARGET:
            target = value
        elif role is Role.SYSROOT:
            return NotCacheable("sysroot-override")
        elif role is Role.PRESENTATION:
            continue
        elif name == "--test":
            is_test = True
        key_tokens.append((canonical, value))

    if not inputs:
        return NotCacheable("no-input")
    if len(inputs) > 1:
        return NotCacheable("multiple-inputs")
    if inputs[0] == "-":
        return NotCacheable("stdin-input")
    if not crate_name:
        crate_name = os.path.splitext(os.path.basename(inputs[0]))[0].replace("-", "_")
    if not crate_types:
        crate_types = ["bin"]
    unknown = sorted(set(crate_types) - CRATE_TYPES)
    if unknown:
        return NotCacheable(f"crate-type:{','.join(unknown)}")
    if not emit:
        emit = {"link": None}
    if out_dir is None:
        out_dir = os.path.dirname(output) if output else cwd
    return Compilation(
        rustc=argv[0], args=argv[1:], cwd=cwd, input=inputs[0], crate_name=crate_name,
        crate_types=crate_types, emit=emit, out_dir=out_dir, output=output,
        extra_filename=extra, codegen=codegen, externs=externs, lib_search=lib_search,
        link_libs=link_libs, target=target, is_test=is_test, key_tokens=key_tokens,
        incremental=incremental,
    )
