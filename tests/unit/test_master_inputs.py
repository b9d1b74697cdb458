"""Finding a compile's inputs before it runs: the package walk and the missing-file signal."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.master import inputs
from distbuild.master.inputs import missed_input, package_inputs
from distbuild.master.runner import CompileJob


def _job(manifest_dir: Path | None) -> CompileJob:
    env = {"CARGO_MANIFEST_DIR": str(manifest_dir)} if manifest_dir else {}
    return CompileJob(argv=["rustc", "src/lib.rs"], env=env, cwd="/", outputs=[])


def _package(root: Path) -> Path:
    files = ["Cargo.toml", "src/lib.rs", "src/deep/mod.rs", "data/table.bin", "build.rs",
             "target/debug/libx.rlib", ".git/HEAD", "nested/Cargo.toml", "nested/src/lib.rs"]
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "empty").mkdir()
    return root


def test_package_files_without_outputs_hidden_dirs_or_nested_packages(tmp_path: Path) -> None:
    """Every file of the package is an input, but not the target directory, .git or a nested
    package; empty directories are kept (a #[path] may walk through them)."""
    pkg = _package(tmp_path / "pkg")
    found = package_inputs(_job(pkg), exclude=[str(pkg / "target")])
    assert found is not None and not found.exact
    assert sorted(Path(f).relative_to(pkg).as_posix() for f in found.files) == [
        "Cargo.toml", "build.rs", "data/table.bin", "src/deep/mod.rs", "src/lib.rs"]
    assert str(pkg / "empty") in found.dirs


def test_no_package_or_too_large_means_probe(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CARGO_MANIFEST_DIR (rustc run by hand) or above the size limits there is no
    package guess: the caller probes instead."""
    pkg = _package(tmp_path / "pkg")
    assert package_inputs(_job(None)) is None
    assert package_inputs(_job(tmp_path / "not-a-package")) is None
    monkeypatch.setattr(inputs, "PACKAGE_MAX_FILES", 3)
    assert package_inputs(_job(pkg)) is None
    monkeypatch.setattr(inputs, "PACKAGE_MAX_FILES", 100)
    monkeypatch.setattr(inputs, "PACKAGE_MAX_BYTES", 10)
    assert package_inputs(_job(pkg)) is None


def test_missing_file_diagnostics_are_recognised() -> None:
    """rustc's missing-module and couldn't-read errors, and an OS error from a proc-macro,
    mean the inputs were incomplete; an ordinary compile error does not."""
    assert missed_input(b"error[E0583]: file not found for module `gone`")
    assert missed_input(b"error: couldn't read `/ws/README.md`: No such file or directory")
    assert missed_input(b"error: proc macro panicked: No such file or directory (os error 2)")
    assert not missed_input(b"error[E0308]: mismatched types")
