"""What a worker offers: os/arch and the identity of the rustc toolchains it has.

Shared by workers (to advertise) and by the RemoteRunner (to require).
"""

from __future__ import annotations

import platform
import subprocess


def rustc_toolchain_id(rustc: str = "rustc") -> str:
    """``rustc-<release>-<commit12>``: the platform value naming a toolchain; "" if absent."""
    try:
        out = subprocess.run([rustc, "-vV"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return f"rustc-{fields.get('release', '?')}-{fields.get('commit-hash', '?')[:12]}"


def host_platform() -> tuple[tuple[str, str], ...]:
    return (("os", platform.system().lower()), ("arch", platform.machine().lower()))


# REAPI's platform lexicon names instruction sets this way (platform.machine() does not).
_ISA = {"x86_64": "x86-64", "amd64": "x86-64", "i386": "x86-32", "i686": "x86-32",
        "aarch64": "arm-a64", "arm64": "arm-a64", "armv7l": "arm-a32"}


def reapi_platform() -> tuple[tuple[str, str], ...]:
    """This machine as REAPI farms route work: ``OSFamily`` and ``ISA`` (the lexicon's keys)."""
    machine = platform.machine().lower()
    return (("OSFamily", platform.system().lower()), ("ISA", _ISA.get(machine, machine)))


def farm_platform(kinds: list[str], toolchains: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """What a bot offers a REAPI farm: ``reapi_platform()``, an ``executor`` per executor kind,
    and a ``toolchain`` per rustc (``rustc_toolchain_id``). docs/reapi.md lists the keys."""
    props = [*reapi_platform(), *(("executor", k) for k in kinds)]
    props += [("toolchain", t) for t in dict.fromkeys(map(rustc_toolchain_id, toolchains)) if t]
    return tuple(sorted(set(props)))
