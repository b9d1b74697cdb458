"""Deterministic WASI preview 1: wasmtime's implementation with the host-dependent calls replaced.

After Shopify's deterministic-wasi-ctx, plus the file-system leaks it leaves to the caller:

* ``clock_time_get`` / ``clock_res_get``: fixed wall and monotonic clocks, zero CPU time.
* ``random_get``: a BLAKE3 extendable-output stream keyed by the run's seed (derived from the
  action digest), so the first bytes are always the same for the same action.
* ``poll_oneoff`` reports every subscription ready at once; ``sched_yield`` returns at once.
* ``sock_*`` refuse (ENOTSUP): there is no network.
* ``fd_filestat_get`` / ``path_filestat_get``: times fixed, device constant, inode numbers
  renumbered in order of first sight, link count 1, directory sizes 0.
* ``fd_readdir``: entries sorted by name, with renumbered inodes and our own cookies.

Everything else (files, preopens, argv, environment, exit) is wasmtime's. wasmtime's WASI
functions find guest memory through their *caller's* ``memory`` export, so a host function
cannot call them directly; a tiny helper module that imports the guest's memory and re-exports
it does the forwarding (see ``HELPER_WAT``). Integer arguments arrive signed: every pointer
and length is masked to 32 bits and bounds-checked (EFAULT when out of range).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import blake3
import wasmtime
from wasmtime import FuncType, ValType

WASI = "wasi_snapshot_preview1"
FIXED_REALTIME_NS = 1_577_836_800 * 10**9  # 2020-01-01T00:00:00Z: after 1980 for zip & co.
FIXED_MONOTONIC_NS = 10**9
FIXED_DEVICE = 1

ESUCCESS, EBADF, EFAULT, EINVAL, ENOTSUP = 0, 8, 21, 28, 58
FILETYPE_DIRECTORY = 3
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_DIRENT = struct.Struct("<QQIB3x")  # d_next, d_ino, d_namlen, d_type
_FILESTAT_SIZE = 64
_MAX_READDIR_ROUNDS = 1 << 20  # bounds the drain loop; a real directory ends long before

_I32, _I64 = ValType.i32(), ValType.i64()

# The wasmtime functions our shadows call through the helper, with their parameter types.
FORWARDED: dict[str, list[ValType]] = {
    "fd_filestat_get": [_I32, _I32],
    "path_filestat_get": [_I32, _I32, _I32, _I32, _I32],
    "fd_readdir": [_I32, _I32, _I32, _I64, _I32],
}


def _helper_wat() -> str:
    imports, funcs = [], []
    for name, params in FORWARDED.items():
        sig = " ".join(str(p) for p in params)
        gets = " ".join(f"local.get {i}" for i in range(len(params)))
        imports.append(f'(import "{WASI}" "{name}" (func ${name} (param {sig}) (result i32)))')
        funcs.append(f'(func (export "{name}") (param {sig}) (result i32) {gets} call ${name})')
    memory = '(import "host" "memory" (memory 0)) (export "memory" (memory 0))'
    return f"(module {' '.join(imports)} {memory} {' '.join(funcs)})"


HELPER_WAT = _helper_wat()


class _Fault(Exception):
    """A guest pointer or length is out of bounds (answered with EFAULT)."""


@dataclass
class DeterministicState:
    """Per-run state of the deterministic layer."""

    seed: bytes  # 32 bytes
    random_offset: int = 0
    inodes: dict[int, int] = field(default_factory=dict)
    helper: dict[str, wasmtime.Func] = field(default_factory=dict)

    def random_bytes(self, n: int) -> bytes:
        out = blake3.blake3(b"distbuild-wasi-random", key=self.seed).digest(
            length=n, seek=self.random_offset
        )
        self.random_offset += n
        return out

    def inode(self, host_ino: int) -> int:
        """Host inode numbers renumbered 1, 2, ... in the (deterministic) order first seen."""
        return self.inodes.setdefault(host_ino, len(self.inodes) + 1)


class _Memory:
    """Bounds-checked access to the calling instance's linear memory."""

    def __init__(self, caller: wasmtime.Caller):
        mem = caller.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            raise _Fault("the module exports no memory")
        self.caller, self.mem = caller, mem
        self.size = mem.data_len(caller)

    def _check(self, ptr: int, n: int) -> int:
        ptr &= _U32
        if n < 0 or ptr + n > self.size:
            raise _Fault(f"{n} bytes at {ptr:#x} outside memory of {self.size} bytes")
        return ptr

    def read(self, ptr: int, n: int) -> bytes:
        ptr = self._check(ptr, n)
        return bytes(self.mem.read(self.caller, ptr, ptr + n))

    def write(self, ptr: int, data: bytes) -> None:
        self.mem.write(self.caller, data, self._check(ptr, len(data)))


def _guarded(fn: Callable[..., int]) -> Callable[..., int]:
    def call(*args: Any) -> int:
        try:
            return fn(*args)
        except _Fault:
            return EFAULT

    return call


class DeterministicWasi:
    """The deterministic shadows, defined once on a linker; ``state`` is swapped per run.

    One instance serves one run at a time (the executor pools engines, one run each).
    """

    def __init__(self, state: DeterministicState | None = None):
        self.state = state or DeterministicState(bytes(32))

    # -- wiring ----------------------------------------------------------------------------
    def install(self, linker: wasmtime.Linker) -> None:
        """Define WASI with our shadows on ``linker`` (store-independent, reusable)."""
        linker.define_wasi()
        linker.allow_shadowing = True
        for name, params, fn in self._shadows():
            ty = FuncType(params, [_I32])
            linker.define_func(WASI, name, ty, _guarded(fn), access_caller=True)

    @staticmethod
    def originals(plain: wasmtime.Linker, store: wasmtime.Store) -> list[wasmtime.Func]:
        """wasmtime's own functions behind the shadows, from a linker with only WASI on it."""
        found = []
        for name in FORWARDED:
            func = plain.get(store, WASI, name)
            assert isinstance(func, wasmtime.Func)
            found.append(func)
        return found

    def attach_helper(
        self, store: wasmtime.Store, helper: wasmtime.Module, originals: list[wasmtime.Func],
        memory: wasmtime.Memory,
    ) -> None:
        """Instantiate the forwarding helper against the guest's memory (after instantiation)."""
        inst = wasmtime.Instance(store, helper, [*originals, memory])
        exports = inst.exports(store)
        for name in FORWARDED:
            func = exports[name]
            assert isinstance(func, wasmtime.Func)
            self.state.helper[name] = func

    def _shadows(self) -> list[tuple[str, list[ValType], Callable[..., int]]]:
        i32, i64 = _I32, _I64
        return [
            ("clock_res_get", [i32, i32], self.clock_res_get),
            ("clock_time_get", [i32, i64, i32], self.clock_time_get),
            ("random_get", [i32, i32], self.random_get),
            ("poll_oneoff", [i32, i32, i32, i32], self.poll_oneoff),
            ("sched_yield", [], self.sched_yield),
            ("sock_accept", [i32, i32, i32], self.no_network),
            ("sock_recv", [i32, i32, i32, i32, i32, i32], self.no_network),
            ("sock_send", [i32, i32, i32, i32, i32], self.no_network),
            ("sock_shutdown", [i32, i32], self.no_network),
            ("fd_filestat_get", [i32, i32], self.fd_filestat_get),
            ("path_filestat_get", [i32, i32, i32, i32, i32], self.path_filestat_get),
            ("fd_readdir", [i32, i32, i32, i64, i32], self.fd_readdir),
        ]

    # -- clocks, randomness, scheduling, network -------------------------------------------
    def clock_res_get(self, caller: wasmtime.Caller, clock_id: int, out: int) -> int:
        if not 0 <= clock_id <= 3:
            return EINVAL
        _Memory(caller).write(out, struct.pack("<Q", 1))
        return ESUCCESS

    def clock_time_get(self, caller: wasmtime.Caller, clock_id: int, _prec: int, out: int) -> int:
        values = {0: FIXED_REALTIME_NS, 1: FIXED_MONOTONIC_NS, 2: 0, 3: 0}
        if clock_id not in values:
            return EINVAL
        _Memory(caller).write(out, struct.pack("<Q", values[clock_id]))
        return ESUCCESS

    def random_get(self, caller: wasmtime.Caller, buf: int, length: int) -> int:
        mem = _Memory(caller)
        mem._check(buf, length & _U32)
        mem.write(buf, self.state.random_bytes(length & _U32))
        return ESUCCESS

    def poll_oneoff(self, caller: wasmtime.Caller, subs: int, events: int, n: int,
                    nevents_out: int) -> int:
        """Every subscription (clock, fd read, fd write) is reported ready at once."""
        n &= _U32
        if n == 0:
            return EINVAL
        mem = _Memory(caller)
        raw = mem.read(subs, 48 * n)
        out = bytearray()
        for i in range(n):
            userdata, tag = struct.unpack_from("<QB", raw, 48 * i)
            out += struct.pack("<QHB5xQH6x", userdata, 0, tag, 0, 0)
        mem.write(events, bytes(out))
        mem.write(nevents_out, struct.pack("<I", n))
        return ESUCCESS

    def sched_yield(self, caller: wasmtime.Caller) -> int:
        return ESUCCESS

    def no_network(self, caller: wasmtime.Caller, *_args: int) -> int:
        return ENOTSUP

    # -- file metadata ---------------------------------------------------------------------
    def _forward(self, caller: wasmtime.Caller, name: str, *args: int) -> int:
        func = self.state.helper.get(name)
        if func is None:  # no guest memory, so nothing could be answered anyway
            return EBADF
        return int(func(caller, *args))

    def _sanitize_filestat(self, mem: _Memory, buf: int) -> None:
        _dev, ino, ftype, _nlink, size = struct.unpack("<QQB7xQQ", mem.read(buf, 40))
        if ftype == FILETYPE_DIRECTORY:
            size = 0  # a directory's size is the host file system's business
        t = FIXED_REALTIME_NS
        mem.write(buf, struct.pack("<QQB7xQQQQQ", FIXED_DEVICE, self.state.inode(ino), ftype,
                                   1, size, t, t, t))

    def fd_filestat_get(self, caller: wasmtime.Caller, fd: int, buf: int) -> int:
        mem = _Memory(caller)
        mem._check(buf, _FILESTAT_SIZE)
        rc = self._forward(caller, "fd_filestat_get", fd, buf)
        if rc == ESUCCESS:
            self._sanitize_filestat(mem, buf)
        return rc

    def path_filestat_get(self, caller: wasmtime.Caller, fd: int, flags: int, path: int,
                          path_len: int, buf: int) -> int:
        mem = _Memory(caller)
        mem._check(buf, _FILESTAT_SIZE)
        rc = self._forward(caller, "path_filestat_get", fd, flags, path, path_len, buf)
        if rc == ESUCCESS:
            self._sanitize_filestat(mem, buf)
        return rc

    # -- directory listing -----------------------------------------------------------------
    def fd_readdir(self, caller: wasmtime.Caller, fd: int, buf: int, buf_len: int, cookie: int,
                   used_out: int) -> int:
        """The whole directory, sorted by name, served from ``cookie`` (an index into it)."""
        mem = _Memory(caller)
        buf_len &= _U32
        mem._check(buf, buf_len)
        mem._check(used_out, 4)
        entries: list[tuple[bytes, int, int]] = []  # (name, host inode, type)
        host_cookie = 0
        for _ in range(_MAX_READDIR_ROUNDS):  # drain wasmtime's listing via the guest's buffer
            rc = self._forward(caller, "fd_readdir", fd, buf, buf_len, host_cookie, used_out)
            if rc != ESUCCESS:
                return rc
            (used,) = struct.unpack("<I", mem.read(used_out, 4))
            batch, next_cookie = _parse_dirents(mem.read(buf, min(used, buf_len)))
            if not batch:
                if used >= buf_len and buf_len > 0:
                    return self._tiny_buffer(mem, buf, used)
                break
            entries += batch
            if used < buf_len or next_cookie <= host_cookie:
                break
            host_cookie = next_cookie
        entries.sort()
        start = cookie & _U64
        out = bytearray()
        for i, (name, ino, dtype) in enumerate(entries[start:], start):
            out += _DIRENT.pack(i + 1, self.state.inode(ino), len(name), dtype) + name
            if len(out) >= buf_len:
                break
        data = bytes(out[:buf_len])
        mem.write(buf, data)
        mem.write(used_out, struct.pack("<I", len(data)))
        return ESUCCESS

    def _tiny_buffer(self, mem: _Memory, buf: int, used: int) -> int:
        """A buffer too small for one entry: the guest only needs ``used == buf_len`` to grow it."""
        if used >= _DIRENT.size:
            d_next, ino, namlen, dtype = _DIRENT.unpack(mem.read(buf, _DIRENT.size))
            mem.write(buf, _DIRENT.pack(d_next, self.state.inode(ino), namlen, dtype))
        return ESUCCESS


def _parse_dirents(data: bytes) -> tuple[list[tuple[bytes, int, int]], int]:
    """Complete entries in a readdir buffer, and the cookie after the last complete one."""
    entries: list[tuple[bytes, int, int]] = []
    pos, next_cookie = 0, 0
    while pos + _DIRENT.size <= len(data):
        d_next, ino, namlen, dtype = _DIRENT.unpack_from(data, pos)
        end = pos + _DIRENT.size + namlen
        if end > len(data):
            break
        entries.append((data[pos + _DIRENT.size:end], ino, dtype))
        next_cookie, pos = d_next, end
    return entries, next_cookie
