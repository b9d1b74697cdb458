"""How RemoteRunner reads rustc arguments and rewrites paths for the sandbox."""

from __future__ import annotations

from distbuild.master.remote_runner import (
    _drop_incremental,
    _probe_args,
    _scan_args,
    _substituter,
    _unplace,
)
from distbuild.worker.materialize import SANDBOX_ROOT


def test_scan_finds_inputs_and_outputs() -> None:
    """--extern files, -L directories (any kind), --out-dir, -o and --emit paths are found,
    relative ones made absolute against the working directory."""
    args = ["--crate-name", "app", "src/main.rs", "--extern", "base=/t/deps/libbase.rlib",
            "--extern=mid=/t/deps/libmid.rmeta", "--extern", "proc_macro",
            "-L", "dependency=/t/deps", "-Lnative=/t/native", "--out-dir", "/t/deps",
            "--emit=dep-info=/t/x.d,metadata,link", "-o", "out/app"]
    scan = _scan_args(args, "/ws")
    assert scan.files == ["/t/deps/libbase.rlib", "/t/deps/libmid.rmeta"]
    assert scan.lib_dirs == ["/t/deps", "/t/native"]
    assert scan.out_dirs == ["/t/deps", "/ws/out"]
    assert scan.emitted == ["/t/x.d", "/ws/out/app"]


def test_substitution_only_whole_paths_under_roots() -> None:
    """Roots get the sandbox placeholder wherever a path starts with them, never inside
    another path or a longer name."""
    sub = _substituter({"/ws", "/ws/target"})
    assert sub("-Ldependency=/ws/target/debug/deps") == \
        f"-Ldependency={SANDBOX_ROOT}/ws/target/debug/deps"
    assert sub("--remap-path-prefix=/ws=.") == f"--remap-path-prefix={SANDBOX_ROOT}/ws=."
    assert sub("/ws2/src") == "/ws2/src"
    assert sub("/other/ws/src") == "/other/ws/src"
    assert sub("a:/ws/x:/usr/bin") == f"a:{SANDBOX_ROOT}/ws/x:/usr/bin"


def test_placeholder_removed_from_results() -> None:
    """Dep-info and diagnostics from the worker name the original absolute paths."""
    data = f"{SANDBOX_ROOT}/ws/target/x.d: {SANDBOX_ROOT}/ws/src/lib.rs\n".encode()
    assert _unplace(data) == b"/ws/target/x.d: /ws/src/lib.rs\n"


def test_incremental_and_outputs_dropped_for_the_probe() -> None:
    """The dep-info probe keeps inputs but drops outputs and incremental state."""
    args = ["src/lib.rs", "-C", "incremental=/t/inc", "-Cincremental=/t/inc2", "-C",
            "opt-level=1", "--emit=dep-info,link", "--out-dir", "/t/deps", "-o", "/t/x"]
    assert _probe_args(args) == ["src/lib.rs", "-C", "opt-level=1"]
    assert _drop_incremental(["rustc", "-C", "incremental=x", "-C", "debuginfo=2"]) == \
        ["rustc", "-C", "debuginfo=2"]
