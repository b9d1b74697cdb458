"""Sandbox materialization refuses every way out of the sandbox, and lays out good trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from distbuild.actions import Directory, DirectoryNode, FileNode, SymlinkNode
from distbuild.cas.digest import Digest, digest_bytes
from distbuild.cas.store import LocalCAS
from distbuild.codec import encode_directory
from distbuild.errors import PathEscape
from distbuild.sandbox import resolve_inside
from distbuild.scheduler.action_builder import InputFile, build_tree
from distbuild.worker.materialize import _validate, fetch_tree, prepare_outputs


class LocalOnly:
    """The two members of CachedStore that fetch_tree uses, over one LocalCAS."""

    def __init__(self, cas: LocalCAS):
        self.local = cas

    def ensure(self, digests: object) -> int:
        return 0

    def get_bytes(self, digest: Digest) -> bytes:
        return b"" if digest.size == 0 else self.local.get_bytes(digest)


def _tree(cas: LocalCAS, root: Directory, *children: Directory) -> Digest:
    for d in children:
        cas.put_bytes(encode_directory(d))
    return cas.put_bytes(encode_directory(root))


@pytest.mark.parametrize("directory, message", [
    (Directory(files=(FileNode("..", digest_bytes(b"x")),)), "single path components"),
    (Directory(files=(FileNode("a/b", digest_bytes(b"x")),)), "single path components"),
    (Directory(symlinks=(SymlinkNode("l", "/etc/passwd"),)), "absolute symlink"),
    (Directory(symlinks=(SymlinkNode("l", "../../x"),)), "outside the sandbox"),
])
def test_escapes_refused(tmp_path: Path, directory: Directory, message: str) -> None:
    """'..', '/' in names, absolute symlinks and symlinks climbing out are refused."""
    cas = LocalCAS(tmp_path / "cas")
    root = _tree(cas, directory)
    tree = fetch_tree(root, LocalOnly(cas))  # type: ignore[arg-type]
    with pytest.raises(PathEscape, match=message):
        _validate(root, tree, "", [])


def test_nested_symlink_climbing_out_refused(tmp_path: Path) -> None:
    """A symlink in a subdirectory may point to its parent but not above the root."""
    cas = LocalCAS(tmp_path / "cas")
    ok_child = Directory(symlinks=(SymlinkNode("up", "../f"),))
    bad_child = Directory(symlinks=(SymlinkNode("up", "../../f"),))
    ok_digest = cas.put_bytes(encode_directory(ok_child))
    root = _tree(cas, Directory(directories=(DirectoryNode("sub", ok_digest),)))
    _validate(root, fetch_tree(root, LocalOnly(cas)), "", [])  # type: ignore[arg-type]
    bad_digest = cas.put_bytes(encode_directory(bad_child))
    root = _tree(cas, Directory(directories=(DirectoryNode("sub", bad_digest),)))
    with pytest.raises(PathEscape, match="outside the sandbox"):
        _validate(root, fetch_tree(root, LocalOnly(cas)), "", [])  # type: ignore[arg-type]


def test_output_paths_checked(tmp_path: Path) -> None:
    """Output paths with '..' or absolute are refused; a symlinked parent pointing out too."""
    for bad in ("../out", "/tmp/out"):
        with pytest.raises(PathEscape):
            prepare_outputs(tmp_path, (bad,))
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(PathEscape, match="resolves outside"):
        prepare_outputs(tmp_path, ("link/out.txt",))
    prepare_outputs(tmp_path, ("target/debug/deps/x.rlib",))
    assert (tmp_path / "target" / "debug" / "deps").is_dir()
    # A sibling whose name merely starts like the sandbox's is outside it.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link").symlink_to(tmp_path / "subway")
    with pytest.raises(PathEscape, match="resolves outside"):
        resolve_inside(tmp_path / "sub", "link/x")


def test_in_place_root_is_the_whole_file_system(tmp_path: Path) -> None:
    """With "/" as the root (an in-place action) every absolute path is inside, unresolved;
    relative-path checks still apply."""
    assert resolve_inside(Path("/"), str(tmp_path).lstrip("/") + "/x") == tmp_path / "x"
    with pytest.raises(PathEscape):
        resolve_inside(Path("/"), "../etc/passwd")


def test_tree_builder_shares_blobs() -> None:
    """Identical files are one blob; the root digest changes when any file changes."""
    same = InputFile.of(b"same")
    root1, blobs1 = build_tree({"a/x": same, "b/y": same})
    root2, _ = build_tree({"a/x": same, "b/y": InputFile.of(b"other")})
    assert root1 != root2
    assert list(blobs1).count(same.digest) == 1
