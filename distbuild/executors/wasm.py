"""Wasm executor: WASI preview 1 modules in wasmtime, deterministic and without ambient authority.

An action's ``ExecSpec`` names its module with the property ``wasm_module`` (a CAS digest,
``hash/size``); without it, ``argv[0]`` is a ``.wasm`` file inside the sandbox. Other properties:
``wasm_fuel`` (instructions), ``wasm_memory`` (e.g. ``256MiB``), ``wasm_seed`` (hex; tasks
derive it from their content; else the ``action_digest`` property workers add seeds the
randomness), ``wasm_output_dir`` (the one writable directory, default: the common parent of
``output_paths``).

The guest sees the sandbox read-only at ``/`` (its working directory), the output directory
writable at ``/<output dir>``, the action's argv and environment and nothing else; clocks,
randomness, directory order and file metadata are deterministic (``wasm_wasi``).

Limits (``wasm_limits``), each a named ``ExecOutcome.failure`` rather than a hang or a crash:
``out of fuel``, ``timed out`` and ``cancelled`` (epoch interruption), ``memory limit``,
``output limit`` (``wasm_output_limit``, bytes the output directory may hold). Engines are
pooled, one run per engine at a time, so a timeout or cancellation can interrupt exactly its
own run by bumping its engine's epoch.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import wasmtime

from distbuild.cas.digest import Digest, digest_bytes
from distbuild.cas.store import BlobStore
from distbuild.config import Config
from distbuild.errors import InvalidRequest
from distbuild.executors.base import ExecOutcome, ExecSpec
from distbuild.executors.wasm_cache import ModuleCache, make_engine
from distbuild.executors.wasm_limits import Capture, WasmLimits, Watchdog, tree_size
from distbuild.executors.wasm_wasi import HELPER_WAT, DeterministicState, DeterministicWasi
from distbuild.sandbox import check_relative, resolve_inside

EXIT_TRAP = 134  # what wasmtime's own CLI reports for a trap (128 + SIGABRT)
EXIT_STOPPED = 137  # stopped by a limit or cancelled (128 + SIGKILL, as a shell would say)
EXIT_INVALID = 126  # not a runnable WASI command module
MEMORY_SLACK = 1 << 20  # a failed run this close to the cap counts as hitting it
_MODULES_PER_ENGINE = 64
_HELPER_WASM = bytes(wasmtime.wat2wasm(HELPER_WAT))
_HELPER_DIGEST = digest_bytes(_HELPER_WASM)


@dataclass
class _EngineSlot:
    """An engine with its linkers and modules; used by one run at a time."""

    engine: wasmtime.Engine
    helper: wasmtime.Module  # the forwarding module of wasm_wasi
    wasi: DeterministicWasi  # its shadows are defined on ``linker``
    linker: wasmtime.Linker  # WASI with the deterministic shadows
    plain: wasmtime.Linker  # WASI only: where the originals come from
    modules: OrderedDict[str, wasmtime.Module] = field(default_factory=OrderedDict)

    @classmethod
    def new(cls, cache: ModuleCache) -> _EngineSlot:
        engine = make_engine()
        wasi = DeterministicWasi()
        linker, plain = wasmtime.Linker(engine), wasmtime.Linker(engine)
        wasi.install(linker)
        plain.define_wasi()
        helper = cache.load(engine, _HELPER_DIGEST)
        if helper is None:
            helper = wasmtime.Module(engine, _HELPER_WASM)
            cache.save(_HELPER_DIGEST, helper)
        return cls(engine, helper, wasi, linker, plain)


class WasmExecutor:
    """Runs WASI command modules; see the module docstring for the action contract."""

    kind = "wasm"

    def __init__(self, cfg: Config, store: BlobStore, cache_dir: Path | None = None):
        self.cfg, self.store = cfg, store
        self.cache = ModuleCache(cache_dir or cfg.home / "wasm-modules")
        self._pool: list[_EngineSlot] = []
        self._lock = threading.Lock()

    # -- engines and modules ---------------------------------------------------------------
    def _acquire(self) -> _EngineSlot:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        return _EngineSlot.new(self.cache)

    def _release(self, slot: _EngineSlot) -> None:
        with self._lock:
            self._pool.append(slot)

    def module_digest(self, spec: ExecSpec, sandbox: Path) -> tuple[Digest, bytes | None]:
        """The module's digest (and its bytes when read from the sandbox)."""
        ref = spec.prop("wasm_module")
        if ref:
            return Digest.parse(ref), None
        if not spec.argv:
            raise InvalidRequest("wasm action without argv and without a wasm_module property")
        data = resolve_inside(sandbox, spec.argv[0]).read_bytes()
        return digest_bytes(data), data

    def _module(self, slot: _EngineSlot, digest: Digest, data: bytes | None
                ) -> tuple[wasmtime.Module, str, float]:
        key = str(digest)
        cached = slot.modules.get(key)
        if cached is not None:
            slot.modules.move_to_end(key)
            return cached, "memory", 0.0
        start = time.monotonic()
        module = self.cache.load(slot.engine, digest)
        source = "disk"
        if module is None:
            module = wasmtime.Module(slot.engine, data or self.store.get_bytes(digest))
            self.cache.save(digest, module)
            source = "compiled"
        slot.modules[key] = module
        while len(slot.modules) > _MODULES_PER_ENGINE:
            slot.modules.popitem(last=False)
        return module, source, time.monotonic() - start

    # -- running ---------------------------------------------------------------------------
    def run(self, spec: ExecSpec, sandbox: Path, cancel: threading.Event) -> ExecOutcome:
        """Run one action. Raises InvalidRequest for a malformed action, CasError for a
        module missing from the store; everything the module does is an ExecOutcome."""
        limits = WasmLimits.for_spec(spec, self.cfg)
        if spec.working_directory not in ("", "."):
            raise InvalidRequest("wasm actions run at the sandbox root (no working_directory)")
        out_dir = output_dir(spec)
        if out_dir:
            resolve_inside(sandbox, out_dir).mkdir(parents=True, exist_ok=True)
        digest, data = self.module_digest(spec, sandbox)
        slot = self._acquire()
        try:
            start = time.monotonic()
            try:
                module, source, compile_s = self._module(slot, digest, data)
            except wasmtime.WasmtimeError as e:
                return _invalid(f"not a valid wasm module: {e}")
            outcome = self._execute(slot, module, spec, sandbox, out_dir, limits, cancel,
                                    run_seed(spec, digest))
            outcome.duration_s = time.monotonic() - start
            outcome.extra.update(module=str(digest), module_source=source,
                                 compile_s=f"{compile_s:.6f}")
            return outcome
        finally:
            self._release(slot)

    def _execute(self, slot: _EngineSlot, module: wasmtime.Module, spec: ExecSpec, sandbox: Path,
                 out_dir: str, limits: WasmLimits, cancel: threading.Event, seed: bytes
                 ) -> ExecOutcome:
        store = wasmtime.Store(slot.engine)
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(1)
        stdout, stderr = Capture(), Capture()
        wasi = wasmtime.WasiConfig()
        wasi.argv = list(spec.argv)
        wasi.env = [[k, v] for k, v in spec.env]
        wasi.stdout_custom = stdout.write
        wasi.stderr_custom = stderr.write
        wasi.preopen_dir(str(sandbox), "/", False)
        out_path = resolve_inside(sandbox, out_dir) if out_dir else None
        if out_path is not None:
            wasi.preopen_dir(str(out_path), f"/{out_dir}", True)
        store.set_wasi(wasi)
        det = slot.wasi
        det.state = DeterministicState(seed)
        originals = det.originals(slot.plain, store)

        exit_code, failure, note, memory = 0, "", "", None
        if cancel.is_set():
            return ExecOutcome(EXIT_STOPPED, failure="cancelled")
        watchdog = Watchdog(slot.engine, cancel, limits, out_path)
        try:
            instance = slot.linker.instantiate(store, module)
            exports = instance.exports(store)
            mem, entry = exports.get("memory"), exports.get("_start")
            if isinstance(mem, wasmtime.Memory):
                memory = mem
                det.attach_helper(store, slot.helper, originals, mem)
            if not isinstance(entry, wasmtime.Func):
                return _invalid("the module exports no _start (not a WASI command)")
            entry(store)
        except wasmtime.ExitTrap as e:
            exit_code = e.code
        except wasmtime.Trap as e:
            exit_code, note = EXIT_TRAP, f"wasm trap: {e.message}"
            if e.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                failure = "out of fuel"
            elif e.trap_code == wasmtime.TrapCode.INTERRUPT:
                failure = "interrupted"  # the watchdog says why
        except wasmtime.WasmtimeError as e:
            text = str(e)
            if "exceeds memory limits" in text:
                exit_code, failure, note = EXIT_STOPPED, "memory limit", text.splitlines()[0]
            elif "unknown import" in text or "incompatible import" in text:
                return _invalid(text.splitlines()[0])
            else:
                exit_code, note = EXIT_TRAP, f"wasm error: {text.splitlines()[0]}"
        finally:
            stopped_by = watchdog.stop()
        if failure == "interrupted":  # a run that ended on its own keeps its own outcome
            failure = stopped_by or "timed out"
        used_memory = memory.data_len(store) if memory is not None else 0
        if (not failure and exit_code != 0
                and used_memory + MEMORY_SLACK > limits.memory_bytes):
            failure = "memory limit"
        if not failure and out_path is not None and tree_size(out_path) > limits.output_bytes:
            failure = "output limit"  # ended before the watchdog's next look
        if failure:
            exit_code = EXIT_STOPPED
            note = f"{failure} ({limits.describe(failure)}); {note}".rstrip("; ")
        err = stderr.value() + (f"\n[distbuild] {note}\n".encode() if note else b"")
        fuel_used = limits.fuel - store.get_fuel()
        return ExecOutcome(
            exit_code=exit_code, stdout=stdout.value(), stderr=err, failure=failure,
            extra={"fuel_consumed": str(fuel_used), "memory_bytes": str(used_memory)},
        )

    def close(self) -> None:
        with self._lock:
            self._pool.clear()


def output_dir(spec: ExecSpec) -> str:
    """The one writable directory: ``wasm_output_dir``, else the outputs' common parent."""
    explicit = spec.prop("wasm_output_dir")
    if explicit:
        return str(check_relative(explicit)).strip("/")
    if not spec.output_paths:
        return ""
    parents = [check_relative(p).parent.parts for p in spec.output_paths]
    common: list[str] = []
    for parts in zip(*parents, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if not common:
        raise InvalidRequest("wasm action outputs must share one directory below the root "
                             "(or set the wasm_output_dir property)")
    return "/".join(common)


def run_seed(spec: ExecSpec, module: Digest) -> bytes:
    """``wasm_seed`` when given, else the ``action_digest`` a worker passes, else a hash of
    everything in the spec that defines the action."""
    given = spec.prop("wasm_seed") or spec.prop("action_digest")
    if given:
        try:
            return blake3.blake3(bytes.fromhex(given)).digest()
        except ValueError as e:
            raise InvalidRequest(f"wasm_seed is not hex: {given!r}") from e
    canon = json.dumps({"module": str(module), "argv": spec.argv, "env": spec.env,
                        "outputs": spec.output_paths, "properties": spec.properties},
                       sort_keys=True)
    return blake3.blake3(canon.encode()).digest()


def _invalid(message: str) -> ExecOutcome:
    return ExecOutcome(EXIT_INVALID, stderr=f"[distbuild] {message}\n".encode(),
                       failure="invalid module")
