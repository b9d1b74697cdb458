"""Classifying rustc command lines and predicting their outputs."""

from __future__ import annotations

import pytest

from distbuild.rustc.args import Compilation, NotCacheable, Passthrough, classify
from distbuild.rustc.outputs import dep_info_path, predicted_outputs

RUSTC = "/toolchain/bin/rustc"
CARGO_LIB = [
    RUSTC, "--crate-name", "itoa", "--edition=2021", "/reg/itoa/src/lib.rs",
    "--error-format=json", "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
    "--crate-type", "lib", "--emit=dep-info,metadata,link", "-C", "embed-bitcode=no",
    "-C", "debuginfo=2", "--check-cfg", "cfg(docsrs,test)", "-C", "metadata=bdbf",
    "-C", "extra-filename=-d62e", "--out-dir", "/ws/target/debug/deps",
    "-L", "dependency=/ws/target/debug/deps", "--cap-lints", "allow",
]


@pytest.mark.parametrize("argv", [
    [RUSTC, "-vV"],
    [RUSTC, "-V"],
    [RUSTC, "--version"],
    [RUSTC, "-", "--crate-name", "___", "--print=file-names", "--crate-type", "bin"],
    [RUSTC, "--print", "sysroot"],
    [RUSTC, "--explain", "E0308"],
])
def test_not_a_compilation_passes_through(argv: list[str]) -> None:
    """Version queries, --print and --explain are passed straight through."""
    assert isinstance(classify(argv, "/ws"), Passthrough)


@pytest.mark.parametrize(("argv", "reason"), [
    ([RUSTC, "-", "--crate-type", "lib", "--emit=llvm-ir"], "stdin-input"),
    ([RUSTC, "a.rs", "b.rs"], "multiple-inputs"),
    ([RUSTC, "--crate-type", "lib"], "no-input"),
    ([RUSTC, "a.rs", "--frobnicate"], "unknown-flag:--frobnicate"),
    ([RUSTC, "a.rs", "--sysroot", "/x"], "sysroot-override"),
    ([RUSTC, "a.rs", "--crate-type"], "missing-value:--crate-type"),
    ([RUSTC, "a.rs", "--crate-type", "sdylib"], "crate-type:sdylib"),
])
def test_not_cacheable_has_a_named_reason(argv: list[str], reason: str) -> None:
    """Compilations we cannot cache say why."""
    result = classify(argv, "/ws")
    assert isinstance(result, NotCacheable)
    assert result.reason == reason


def test_cargo_lib_invocation() -> None:
    """A typical Cargo rlib compile is parsed into its parts."""
    comp = classify(CARGO_LIB, "/reg/itoa")
    assert isinstance(comp, Compilation)
    assert comp.crate_name == "itoa"
    assert comp.crate_types == ["lib"]
    assert comp.extra_filename == "-d62e"
    assert comp.out_dir == "/ws/target/debug/deps"
    assert comp.lib_search == [("dependency", "/ws/target/debug/deps")]
    assert not comp.is_linked
    assert predicted_outputs(comp) == [
        "/ws/target/debug/deps/itoa-d62e.d",
        "/ws/target/debug/deps/libitoa-d62e.rlib",
        "/ws/target/debug/deps/libitoa-d62e.rmeta",
    ]
    assert dep_info_path(comp) == "/ws/target/debug/deps/itoa-d62e.d"


def test_incremental_is_keyed_out() -> None:
    """-C incremental is remembered but does not appear among the key's tokens."""
    comp = classify([*CARGO_LIB, "-C", "incremental=/ws/target/debug/incremental"], "/ws")
    assert isinstance(comp, Compilation)
    assert comp.incremental == "/ws/target/debug/incremental"
    assert all("incremental" not in v for _, v in comp.key_tokens)


@pytest.mark.parametrize(("crate_type", "name"), [
    ("bin", "app-x"), ("proc-macro", "libapp-x.so"), ("cdylib", "libapp-x.so"),
    ("dylib", "libapp-x.so"), ("staticlib", "libapp-x.a"), ("rlib", "libapp-x.rlib"),
])
def test_linked_and_other_crate_types(crate_type: str, name: str) -> None:
    """Every crate type Cargo produces is a cacheable compilation with a known output name."""
    comp = classify([RUSTC, "--crate-name", "app", "src/main.rs", "--crate-type", crate_type,
                     "--emit=dep-info,link", "-Cextra-filename=-x", "--out-dir", "out"], "/ws")
    assert isinstance(comp, Compilation)
    assert comp.is_linked == (crate_type != "rlib")
    assert f"/ws/out/{name}" in predicted_outputs(comp)
    assert "/ws/out/app-x.d" in predicted_outputs(comp)


def test_test_harness_is_a_bin() -> None:
    """--test builds an executable harness."""
    comp = classify([RUSTC, "--crate-name", "m", "src/lib.rs", "--test", "--emit=link",
                     "-C", "extra-filename=-t", "--out-dir", "/o"], "/ws")
    assert isinstance(comp, Compilation)
    assert comp.is_test and comp.is_linked
    assert predicted_outputs(comp) == ["/o/m-t"]


def test_check_build_emits_metadata_only() -> None:
    """cargo check's --emit=dep-info,metadata produces the .rmeta and the .d."""
    comp = classify([RUSTC, "--crate-name", "c", "src/lib.rs", "--crate-type", "lib",
                     "--emit=dep-info,metadata", "-C", "extra-filename=-k", "--out-dir", "/o"],
                    "/ws")
    assert isinstance(comp, Compilation)
    assert predicted_outputs(comp) == ["/o/c-k.d", "/o/libc-k.rmeta"]


def test_o_and_explicit_emit_paths() -> None:
    """-o names the single output; --emit kind=path names its own."""
    comp = classify([RUSTC, "x.rs", "-o", "bin/x", "--emit=link,dep-info=deps/x.d"], "/ws")
    assert isinstance(comp, Compilation)
    assert comp.crate_name == "x"
    assert sorted(predicted_outputs(comp)) == ["/ws/bin/x", "/ws/deps/x.d"]


def test_native_libs_and_externs() -> None:
    """-l, -L kinds and --extern forms are recorded (they feed the key)."""
    comp = classify([RUSTC, "src/lib.rs", "--crate-type", "lib", "-l", "static=foo",
                     "-lbar", "-L", "native=/o/out", "-L/plain", "--extern", "a=/d/liba.rlib",
                     "--extern", "proc_macro", "-C", "link-arg=-Wl,-z,now"], "/ws")
    assert isinstance(comp, Compilation)
    assert comp.link_libs == [("static", "foo"), ("", "bar")]
    assert comp.lib_search == [("native", "/o/out"), ("all", "/plain")]
    assert comp.externs == [("a", "/d/liba.rlib"), ("proc_macro", None)]
    assert ("-C", "link-arg=-Wl,-z,now") in comp.key_tokens
