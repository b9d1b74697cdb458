"""A Wasm task (a module by digest, its arguments and inputs) as a REAPI-shaped Action.

The task's identity is the digest of its Action, exactly like a build action: the Command
carries argv, environment, the output directory and the wasm knobs as platform properties;
the input root is a Directory tree. So the same task submitted twice has the same digest, is
found in the action cache, and its receipt is looked up by that digest (homestar's task id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import blake3

from distbuild.actions import Action, Command
from distbuild.cas.digest import Digest
from distbuild.codec import blob_of, encode_action, encode_command
from distbuild.executors.base import ExecSpec
from distbuild.sandbox import check_relative
from distbuild.tasks.tree import BlobSource, build_tree

EXECUTOR_PLATFORM = (("executor", "wasm"),)


@dataclass(frozen=True)
class TaskInput:
    """A host file or directory placed read-only at ``guest`` (relative to the guest's ``/``)."""

    guest: str
    host: Path

    @classmethod
    def parse(cls, text: str) -> TaskInput:
        """``HOST`` (placed at its base name) or ``HOST=GUEST``."""
        host, sep, guest = text.partition("=")
        path = Path(host).expanduser()
        name = guest.strip("/") if sep else path.resolve().name
        check_relative(name)
        return cls(name, path)


@dataclass(frozen=True)
class WasmTask:
    module: Digest
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    inputs: tuple[TaskInput, ...] = ()
    fuel: int = 0  # 0 = the worker's default
    timeout_s: float = 0.0  # 0 = the scheduler's job timeout
    memory: str = ""  # e.g. "256MiB"; empty = the worker's cap
    output_dir: str = "out"  # the one writable directory; every file in it is an output
    program: str = "task.wasm"  # argv[0] as the guest sees it
    seed: str = ""  # hex; empty = derived from everything else the task names

    def derived_seed(self, input_root: Digest) -> str:
        """The seed of the guest's randomness: a hash of the module, inputs, argv, env, limits.

        It is part of the Command (hence of the task digest) and reaches the executor
        unchanged, so every worker and the in-process runner produce the same random bytes.
        """
        if self.seed:
            return self.seed
        canon = json.dumps({"module": str(self.module), "inputs": str(input_root),
                            "args": self.args, "env": sorted(self.env), "fuel": self.fuel,
                            "memory": self.memory, "output_dir": self.output_dir,
                            "program": self.program}, sort_keys=True)
        return blake3.blake3(canon.encode()).hexdigest()

    def properties(self, input_root: Digest) -> tuple[tuple[str, str], ...]:
        props = [*EXECUTOR_PLATFORM, ("wasm_module", str(self.module)),
                 ("wasm_output_dir", self.output_dir),
                 ("wasm_seed", self.derived_seed(input_root))]
        if self.fuel:
            props.append(("wasm_fuel", str(self.fuel)))
        if self.memory:
            props.append(("wasm_memory", self.memory))
        return tuple(sorted(props))

    def command(self, input_root: Digest) -> Command:
        check_relative(self.output_dir)
        return Command(
            arguments=(self.program, *self.args), environment=tuple(sorted(self.env)),
            output_paths=(self.output_dir,), platform=self.properties(input_root),
        )


@dataclass(frozen=True)
class PreparedTask:
    """A task turned into CAS blobs: what to upload, and the Action digest that names it."""

    task: WasmTask
    command: Command
    action: Action
    action_digest: Digest
    blobs: dict[Digest, BlobSource]

    def exec_spec(self) -> ExecSpec:
        """What a wasm executor runs (the same spec a worker derives from the Action)."""
        props = dict(self.command.platform + self.action.platform)
        return ExecSpec(
            argv=self.command.arguments, env=self.command.environment,
            output_paths=self.command.output_paths,
            working_directory=self.command.working_directory, timeout_s=self.action.timeout_s,
            properties=tuple(props.items()),
        )


def prepare(task: WasmTask, module_file: Path | None = None) -> PreparedTask:
    """Encode a task; ``module_file`` (the module's bytes) is added to the blobs when given."""
    root, blobs = build_tree(task.inputs)
    command = task.command(root)
    command_digest, command_blob = blob_of(encode_command(command))
    action = Action(command_digest=command_digest, input_root_digest=root,
                    timeout_s=task.timeout_s, platform=EXECUTOR_PLATFORM)
    action_digest, action_blob = blob_of(encode_action(action))
    blobs[command_digest] = command_blob
    blobs[action_digest] = action_blob
    if module_file is not None:
        blobs[task.module] = module_file
    return PreparedTask(task, command, action, action_digest, blobs)
