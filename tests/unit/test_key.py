"""The cache key: pinned for known inputs, sensitive to each input, blind to checkout paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.rustc.args import Compilation, classify
from distbuild.rustc.depinfo import parse_dep_info
from distbuild.rustc.key import KEY_VERSION, Manifest, direct_key, result_key
from distbuild.rustc.paths import PathMap

ENV = {"CARGO_PKG_NAME": "app", "CARGO_MANIFEST_DIR": "/ws/app", "CARGO_MAKEFLAGS": "-j",
       "PATH": "/usr/bin", "HOME": "/root", "OUT_DIR": "/ws/target/debug/build/app-1/out"}


def _comp(root: str = "/ws", extra: tuple[str, ...] = ()) -> Compilation:
    comp = classify(["/tc/bin/rustc", "--crate-name", "app", "--edition=2021", "src/lib.rs",
                     "--crate-type", "lib", "--emit=dep-info,metadata,link",
                     "-C", f"incremental={root}/target/debug/incremental",
                     "-C", "extra-filename=-abc", "--out-dir", f"{root}/target/debug/deps",
                     "--extern", f"dep={root}/target/debug/deps/libdep-1.rlib", *extra], root)
    assert isinstance(comp, Compilation)
    return comp


def _paths(root: str) -> PathMap:
    return PathMap(((f"{root}/target", "@@TARGET@@"), ("/home/u/.cargo", "@@CARGO_HOME@@"),
                    (root, "@@WORKSPACE@@")))


def _env(root: str) -> dict[str, str]:
    return {k: v.replace("/ws", root) for k, v in ENV.items()}


def _key(root: str = "/ws", extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
         digest: str = "d" * 64) -> str:
    return direct_key(_comp(root, extra), env or _env(root), _paths(root), "toolchain-1",
                      lambda path: digest)


def test_key_is_pinned() -> None:
    """The key of a known invocation never changes without a KEY_VERSION bump."""
    assert KEY_VERSION == "distbuild-rustc-key-2"
    assert _key() == PINNED


def test_key_ignores_checkout_path_incremental_and_jobserver() -> None:
    """Another checkout path, another incremental dir, or jobserver flags: same key."""
    assert _key("/elsewhere/checkout") == _key()
    env = dict(_env("/ws"), CARGO_MAKEFLAGS="-j --jobserver-auth=3,4")
    assert _key(env=env) == _key()


@pytest.mark.parametrize("extra", [
    ("--diagnostic-width=100",), ("--diagnostic-width", "250"), ("--color=always",),
    ("--color", "never"),
])
def test_key_ignores_presentation_flags(extra: tuple[str, ...]) -> None:
    """The terminal's width and the colour choice do not change what is built."""
    assert _key(extra=extra) == _key()


@pytest.mark.parametrize("change", [
    ("extra", ("--cfg", "feature=\"x\"")),
    ("extra", ("-C", "opt-level=3")),
    ("env", ("CARGO_PKG_VERSION", "1.0.0")),
    ("env", ("RUSTC_BOOTSTRAP", "1")),
    ("digest", "e" * 64),
])
def test_key_changes_with_each_input(change: tuple[str, object]) -> None:
    """Flags, keyed environment variables and extern contents all change the key."""
    kind, value = change
    if kind == "extra":
        assert _key(extra=value) != _key()  # type: ignore[arg-type]
    elif kind == "env":
        name, val = value  # type: ignore[misc]
        assert _key(env=dict(_env("/ws"), **{name: val})) != _key()
    else:
        assert _key(digest=value) != _key()  # type: ignore[arg-type]


def test_result_key_covers_sources_and_env_deps() -> None:
    """The second stage changes with a source's contents and an env-dep's value."""
    m = Manifest(("@@WORKSPACE@@/src/lib.rs",), ("FOO",))
    base = result_key("k", m, ["a" * 64], ["1"])
    assert result_key("k", m, ["b" * 64], ["1"]) != base
    assert result_key("k", m, ["a" * 64], ["2"]) != base
    assert result_key("k", m, ["a" * 64], [None]) != base
    assert result_key("k", m, ["a" * 64], ["1"]) == base


def test_path_map_roundtrip() -> None:
    """Normalization replaces whole path components only, and denormalizes elsewhere."""
    pm = _paths("/ws")
    text = "/ws/target/debug/x.rlib /ws/src/a.rs /ws2/other /home/u/.cargo/registry"
    norm = pm.normalize(text)
    assert norm == ("@@TARGET@@/debug/x.rlib @@WORKSPACE@@/src/a.rs /ws2/other "
                    "@@CARGO_HOME@@/registry")
    assert _paths("/new").denormalize(norm) == text.replace("/ws/", "/new/").replace(
        "/ws2", "/ws2")
    assert PathMap((("/t", "@@TARGET@@"),)).denormalize(norm) is None


def test_parse_dep_info(tmp_path: Path) -> None:
    """Sources of the first rule (relative ones made absolute) and env-dep lines."""
    text = ("/o/app.d: src/main.rs /abs/gen\\ file.rs\n\n/o/app: src/main.rs\n\n"
            "src/main.rs:\n\n# env-dep:OUT_DIR=/o/out\n# env-dep:UNSET_VAR\n")
    info = parse_dep_info(text, "/ws")
    assert info.sources == ["/ws/src/main.rs", "/abs/gen file.rs"]
    assert info.env_deps == [("OUT_DIR", "/o/out"), ("UNSET_VAR", None)]
    assert info.via_dirs == []


def test_dep_info_dotdot_paths_name_the_directories_they_cross() -> None:
    """``a/b/../../c/x.rs`` is a source at ``c/x.rs`` that also needs ``a/b`` to exist."""
    info = parse_dep_info("/o/x.d: src/a/b/../../c/x.rs src/y.rs\n", "/ws")
    assert info.sources == ["/ws/src/c/x.rs", "/ws/src/y.rs"]
    assert info.via_dirs == ["/ws/src/a", "/ws/src/a/b"]


PINNED = "107b9a362bde26c399a644af037b6012b2503555fa0607dfe5f1340ffacfd5d1"


def test_c_prefix_map_flags_put_the_most_specific_root_last() -> None:
    """C compilers use the last matching map: a root nested in another comes after it."""
    from distbuild.rustc.paths import c_prefix_map_flags

    flags = c_prefix_map_flags("/ws", "/ws/target", "/home/u/.cargo").split()
    assert sorted(flags) == sorted(["-ffile-prefix-map=/ws=.",
                                    "-ffile-prefix-map=/ws/target=/distbuild/target",
                                    "-ffile-prefix-map=/home/u/.cargo=/distbuild/cargo-home"])
    assert flags.index("-ffile-prefix-map=/ws=.") < flags.index(
        "-ffile-prefix-map=/ws/target=/distbuild/target")
