"""`cargo distbuild build|check|test ARGS`: every argument we do not own reaches Cargo as given."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Distbuild

RECORDING_CARGO = """#!/bin/sh
# Records each invocation, one line of NUL-separated arguments, and does nothing else.
for a in "$@"; do printf '%s\\0' "$a"; done >> "$CARGO_ARGS_LOG"
printf '\\n' >> "$CARGO_ARGS_LOG"
"""


def _cargo_argv(distbuild: Distbuild, tmp_path: Path, *args: str) -> list[str]:
    """What `cargo-distbuild ARGS` ran Cargo with (the build command, not `cargo metadata`)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "cargo").write_text(RECORDING_CARGO)
    (bin_dir / "cargo").chmod(0o755)
    log = tmp_path / "cargo-args.log"
    log.write_bytes(b"")
    env = {"PATH": f"{bin_dir}{os.pathsep}{distbuild.env['PATH']}", "CARGO_ARGS_LOG": str(log)}
    distbuild.run(*args, env=env, cwd=tmp_path)
    calls = [line.split(b"\0")[:-1] for line in log.read_bytes().splitlines()]
    builds = [[a.decode() for a in c] for c in calls if c[:1] != [b"metadata"]]
    assert len(builds) == 1, calls
    return builds[0]


@pytest.mark.parametrize("args", [
    ["build", "--workspace"],
    ["check", "--all-targets", "--workspace"],
    ["build", "--w"],
    ["build", "--work"],
    ["build", "--no"],
    ["build", "-p", "x", "--features", "a,b", "--release"],
    ["test", "--workspace", "--lib", "--bins", "--tests", "--", "--nocapture",
     "--test-threads=1"],
    ["test", "-p", "x", "--", "--workspace-only", "--no-summary", "-h"],
    ["build", "-v", "--message-format=json"],
])
def test_arguments_reach_cargo_unchanged(distbuild: Distbuild, tmp_path: Path,
                                         args: list[str]) -> None:
    """Cargo gets exactly the arguments we do not own, in order: abbreviations of our options
    (`--w`, `--no`), `--` and everything after it (even our own option names) included."""
    assert _cargo_argv(distbuild, tmp_path, *args) == args


def test_own_options_are_taken_out(distbuild: Distbuild, tmp_path: Path) -> None:
    """Our exact spellings before `--` are ours; Cargo sees the rest in order."""
    argv = _cargo_argv(distbuild, tmp_path, "-v", "build", "--no-summary", "--workspace",
                       "--workspace-only", "-p", "x")
    assert argv == ["build", "--workspace", "-p", "x"]


def _root_and_member(root: Path) -> Path:
    """A workspace whose root is itself a package (a bin only) with one library member."""
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text(textwrap.dedent("""\
        [package]
        name = "rootpkg"
        version = "0.1.0"
        edition = "2021"

        [workspace]
        members = ["member"]
        """))
    (root / "src" / "main.rs").write_text('fn main() { println!("root"); }\n')
    (root / "member" / "src").mkdir(parents=True)
    (root / "member" / "Cargo.toml").write_text(textwrap.dedent("""\
        [package]
        name = "member"
        version = "0.1.0"
        edition = "2021"
        """))
    (root / "member" / "src" / "lib.rs").write_text(textwrap.dedent("""\
        pub fn answer() -> u32 { 42 }

        #[cfg(test)]
        mod tests {
            #[test]
            fn member_answers() { assert_eq!(super::answer(), 42); }
        }
        """))
    return root


@pytest.mark.slow
def test_workspace_flag_builds_and_tests_every_member(distbuild: Distbuild,
                                                       tmp_path: Path) -> None:
    """`build --workspace` builds the member too (not only the root package), and
    `test --workspace --lib --bins --tests -- ARGS` runs the member's test."""
    ws = _root_and_member(tmp_path / "ws")
    distbuild.cargo("build", "--workspace", cwd=ws)
    assert list((ws / "target" / "debug").glob("libmember.rlib")), "member not built"
    tested = distbuild.cargo("test", "--workspace", "--lib", "--bins", "--tests", "--",
                             "--test-threads=1", cwd=ws)
    assert "tests::member_answers ... ok" in tested.stdout, tested.stdout + tested.stderr
