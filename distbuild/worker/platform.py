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
