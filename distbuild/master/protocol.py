"""The shim <-> master wire format over the Unix socket (mirrored in wrapper/distbuild_wrap.py).

Request:  b"DBW1" + u32 length + payload, payload = NUL-joined fields:
          kind, then for kind b"C" (compile): cwd, argc, argv..., env "NAME=value"...;
          for kind b"B": the build id.
          kinds: C compile, S stats (JSON reply), B one build's stats (JSON), Z zero stats,
          P ping (JSON: pid, mode, config digest...), Q shut down.
Reply:    b"DBR1" + u32 length + body, body = kind byte + data:
          b"X" exec rustc yourself; b"R" + i32 exit code + u64 stdout length + stdout + stderr;
          b"J" + JSON (stats, ping).
Little-endian integers. The shim treats anything unexpected as "master unavailable" and runs
rustc itself.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

REQUEST_MAGIC = b"DBW1"
REPLY_MAGIC = b"DBR1"


@dataclass
class Request:
    kind: bytes
    cwd: str = ""
    argv: list[str] | None = None
    env: dict[str, str] | None = None
    build_id: str = ""  # kind b"B"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, magic: bytes) -> bytes:
    head = _recv_exact(sock, 8)
    if head[:4] != magic:
        raise ConnectionError(f"bad frame magic {head[:4]!r}")
    return _recv_exact(sock, int.from_bytes(head[4:], "little"))


def write_frame(sock: socket.socket, magic: bytes, payload: bytes) -> None:
    sock.sendall(magic + len(payload).to_bytes(4, "little") + payload)


def decode_request(payload: bytes) -> Request:
    fields = payload.split(b"\0")
    kind = fields[0]
    if kind == b"B":
        return Request(kind, build_id=fields[1].decode("utf-8", "replace") if len(fields) > 1
                       else "")
    if kind != b"C":
        return Request(kind)
    cwd = fields[1].decode("utf-8", "surrogateescape")
    argc = int(fields[2])
    argv = [f.decode("utf-8", "surrogateescape") for f in fields[3:3 + argc]]
    env = {}
    for item in fields[3 + argc:]:
        name, _, value = item.decode("utf-8", "surrogateescape").partition("=")
        if name:
            env[name] = value
    return Request(kind, cwd, argv, env)


def encode_request(req: Request) -> bytes:
    if req.kind == b"B":
        return req.kind + b"\0" + req.build_id.encode()
    if req.kind != b"C":
        return req.kind
    argv = req.argv or []
    fields = [req.kind, req.cwd.encode(), str(len(argv)).encode()]
    fields += [a.encode("utf-8", "surrogateescape") for a in argv]
    fields += [f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in (req.env or {}).items()]
    return b"\0".join(fields)


def encode_exec() -> bytes:
    return b"X"


def encode_result(exit_code: int, stdout: bytes, stderr: bytes) -> bytes:
    return (b"R" + exit_code.to_bytes(4, "little", signed=True)
            + len(stdout).to_bytes(8, "little") + stdout + stderr)


def encode_json(data: bytes) -> bytes:
    return b"J" + data


def start_failure_file(home: Path) -> Path:
    """Why the last master could not start (written by it, or by a shim that gave up waiting).
    While it is recent (``RETRY_START_S`` in the shim) shims run rustc at once instead of each
    paying for another failed start; a master that starts removes it."""
    return home / "master.failed"
