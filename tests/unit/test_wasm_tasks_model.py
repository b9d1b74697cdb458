"""Wasm task model: task digests, input trees, the receipt index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distbuild.actions import ActionResult, Directory, FileNode, OutputFile
from distbuild.cas.digest import digest_bytes
from distbuild.cas.store import LocalCAS
from distbuild.codec import encode_directory
from distbuild.errors import InvalidRequest, PathEscape
from distbuild.tasks.receipt import Receipt, ReceiptIndex
from distbuild.tasks.task import TaskInput, WasmTask, prepare
from distbuild.tasks.tree import build_tree, materialize


def _tree(root: Path, order: list[str], mtime: int) -> Path:
    root.mkdir()
    for name in order:
        (root / name).write_text(name)
        os.utime(root / name, (mtime, mtime))
    return root


def test_task_digest_depends_on_content_only(tmp_path: Path) -> None:
    """The same files written in another order at another time give the same task digest;
    other content, arguments or limits give another one."""
    module = digest_bytes(b"module")
    a = _tree(tmp_path / "a", ["x", "y", "z"], 1)
    b = _tree(tmp_path / "b", ["z", "x", "y"], 999)
    first = prepare(WasmTask(module, args=("1",), inputs=(TaskInput("in", a),)))
    same = prepare(WasmTask(module, args=("1",), inputs=(TaskInput("in", b),)))
    assert first.action_digest == same.action_digest
    (b / "x").write_text("changed")
    assert prepare(WasmTask(module, args=("1",), inputs=(TaskInput("in", b),))).action_digest \
        != first.action_digest
    assert prepare(WasmTask(module, args=("2",), inputs=(TaskInput("in", a),))).action_digest \
        != first.action_digest
    assert prepare(WasmTask(module, args=("1",), inputs=(TaskInput("in", a),),
                            fuel=5)).action_digest != first.action_digest


def test_task_input_syntax_and_escapes(tmp_path: Path) -> None:
    """PATH goes to its base name, PATH=GUEST to GUEST; '..' and absolute guests are refused."""
    assert TaskInput.parse(f"{tmp_path}/data.txt") == TaskInput("data.txt",
                                                                Path(f"{tmp_path}/data.txt"))
    assert TaskInput.parse("x.txt=sub/dir/y.txt").guest == "sub/dir/y.txt"
    with pytest.raises(PathEscape):
        TaskInput.parse("x.txt=../y")
    with pytest.raises(InvalidRequest):
        build_tree([TaskInput("a", tmp_path / "missing")])


def test_materialize_refuses_names_that_leave_the_sandbox(tmp_path: Path) -> None:
    """A Directory blob naming '../evil' is refused before anything is written there."""
    cas = LocalCAS(tmp_path / "cas")
    blob = cas.put_bytes(b"evil")
    root = cas.put_bytes(encode_directory(Directory(files=(FileNode("../evil", blob),))))
    dest = tmp_path / "sandbox"
    dest.mkdir()
    with pytest.raises(PathEscape):
        materialize(cas, root, dest)
    assert not (tmp_path / "evil").exists()


def test_receipt_index_misses_once_an_output_is_evicted(tmp_path: Path) -> None:
    """A receipt is served while every blob it names is present, and is a miss afterwards."""
    cas = LocalCAS(tmp_path / "cas")
    index = ReceiptIndex(tmp_path / "receipts", cas)
    out = cas.put_bytes(b"generated")
    task = digest_bytes(b"task")
    receipt = Receipt.from_result(task, None, ActionResult(
        output_files=(OutputFile("out/x", out),), stdout_digest=cas.put_bytes(b"")))
    digest = index.record(receipt)
    assert index.lookup(task) == (digest, receipt)
    cas.path_of(out).unlink()
    assert index.lookup(task) is None


def test_unindexed_receipts_are_stored_but_not_served(tmp_path: Path) -> None:
    """record(index=False) keeps the receipt in the CAS without answering later lookups."""
    cas = LocalCAS(tmp_path / "cas")
    index = ReceiptIndex(tmp_path / "receipts", cas)
    task = digest_bytes(b"failing task")
    receipt = Receipt.from_result(task, None, ActionResult(exit_code=137))
    digest = index.record(receipt, index=False)
    assert cas.contains(digest)
    assert index.lookup(task) is None
