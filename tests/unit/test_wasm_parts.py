"""The pieces around the wasm executor: dirent parsing, module cache, output dir, receipts."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import wasmtime

from distbuild.actions import ActionResult, ExecutionMetadata, OutputFile
from distbuild.cas.digest import digest_bytes
from distbuild.errors import InvalidRequest, PathEscape
from distbuild.executors.base import ExecSpec
from distbuild.executors.wasm import output_dir, run_seed
from distbuild.executors.wasm_cache import ModuleCache, make_engine
from distbuild.executors.wasm_toolchain import wat_to_wasm
from distbuild.executors.wasm_wasi import DeterministicState, _parse_dirents
from distbuild.tasks.receipt import Receipt


def _dirent(next_cookie: int, ino: int, name: bytes, dtype: int = 4) -> bytes:
    return struct.pack("<QQIB3x", next_cookie, ino, len(name), dtype) + name


def test_parse_dirents_stops_at_a_truncated_entry() -> None:
    """Complete entries are returned with the cookie after the last one; a cut entry is not."""
    data = _dirent(1, 10, b"a") + _dirent(2, 11, b"bb") + _dirent(3, 12, b"ccc")[:-1]
    entries, cookie = _parse_dirents(data)
    assert entries == [(b"a", 10, 4), (b"bb", 11, 4)]
    assert cookie == 2


def test_random_stream_is_a_pure_function_of_seed_and_offset() -> None:
    """Reading 8+8 bytes gives the same stream as reading 16; inodes number in first-seen order."""
    a, b = DeterministicState(b"s" * 32), DeterministicState(b"s" * 32)
    assert a.random_bytes(8) + a.random_bytes(8) == b.random_bytes(16)
    assert [a.inode(99), a.inode(7), a.inode(99)] == [1, 2, 1]


def test_output_dir_is_the_common_parent_or_explicit() -> None:
    """Outputs under one directory make it writable; outputs at the root are refused."""
    assert output_dir(ExecSpec(argv=(), output_paths=("out/a.rs", "out/sub/b.rs"))) == "out"
    assert output_dir(ExecSpec(argv=(), properties=(("wasm_output_dir", "gen"),))) == "gen"
    assert output_dir(ExecSpec(argv=())) == ""
    with pytest.raises(InvalidRequest):
        output_dir(ExecSpec(argv=(), output_paths=("a.rs", "out/b.rs")))
    with pytest.raises(PathEscape):
        output_dir(ExecSpec(argv=(), properties=(("wasm_output_dir", "../x"),)))


def test_seed_depends_on_the_action() -> None:
    """The seed: wasm_seed, else the worker's action_digest, else a hash of the spec."""
    module = digest_bytes(b"m")
    one = run_seed(ExecSpec(argv=("a",)), module)
    assert one == run_seed(ExecSpec(argv=("a",)), module)
    assert one != run_seed(ExecSpec(argv=("b",)), module)
    seeded = ExecSpec(argv=("a",), properties=(("wasm_seed", "ab" * 32),))
    assert run_seed(seeded, module) != one
    by_action = ExecSpec(argv=("a",), properties=(("action_digest", "cd" * 32),))
    assert run_seed(by_action, module) not in (one, run_seed(seeded, module))
    both = ExecSpec(argv=("a",), properties=(("action_digest", "cd" * 32),
                                             ("wasm_seed", "ab" * 32)))
    assert run_seed(both, module) == run_seed(seeded, module)


def test_module_cache_refuses_damaged_and_foreign_files(tmp_path: Path) -> None:
    """A flipped byte is detected before deserializing; another fingerprint uses another file."""
    engine = make_engine()
    wasm = wat_to_wasm('(module (func (export "_start")))')
    digest = digest_bytes(wasm)
    cache = ModuleCache(tmp_path)
    cache.save(digest, wasmtime.Module(engine, wasm))
    assert cache.load(engine, digest) is not None
    other = ModuleCache(tmp_path, fingerprint=cache.fingerprint + "-other-settings")
    assert other.path(digest) != cache.path(digest)
    assert other.load(engine, digest) is None
    data = bytearray(cache.path(digest).read_bytes())
    data[-1] ^= 0xFF
    cache.path(digest).write_bytes(bytes(data))
    assert cache.load(engine, digest) is None
    assert not cache.path(digest).exists()


def test_receipt_round_trips_and_is_canonical() -> None:
    """Encoding is canonical (same receipt, same bytes) and decoding restores every field."""
    out = OutputFile("out/x", digest_bytes(b"x"))
    result = ActionResult(output_files=(out,), exit_code=0, stdout_digest=digest_bytes(b"o"),
                          metadata=ExecutionMetadata(worker="w1", executor="wasm",
                                                     started_at=1.5, completed_at=2.5,
                                                     fuel_consumed=42))
    task = digest_bytes(b"task")
    receipt = Receipt.from_result(task, digest_bytes(b"module"), result)
    assert Receipt.decode(receipt.encode()) == receipt
    assert receipt.encode() == Receipt.from_result(task, receipt.module, result).encode()
    assert receipt.fuel_consumed == 42 and receipt.worker == "w1"
