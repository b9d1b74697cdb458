"""The environment a rustc miss is executed with."""

from __future__ import annotations

JOBSERVER_VARS = ("CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS")


def execution_env(env: dict[str, str]) -> dict[str, str]:
    """The request's environment minus jobserver variables.

    Their file descriptors belong to the shim's process, not to the daemon running rustc:
    passing them on makes every rustc warn that it cannot reach the jobserver.
    """
    return {k: v for k, v in env.items() if k not in JOBSERVER_VARS}
