"""distbuild-wrap: the compiler-wrapper shim Cargo runs instead of rustc.

Cargo calls ``distbuild-wrap /path/to/rustc ARGS...`` (RUSTC_WRAPPER or
RUSTC_WORKSPACE_WRAPPER). The shim hands the invocation to the local master over a Unix socket
and replays its answer; if the master cannot be reached, answers nonsense or dies mid-request,
the shim runs rustc itself (exec, so Cargo's jobserver descriptors and stdin stay intact) and
counts a fallback. ``DISTBUILD_DISABLE=1`` bypasses everything.

Standard library only, and as little of it as possible: this runs once per rustc invocation
and its start-up time is the floor of every cache hit. The wire format is documented in
distbuild/master/protocol.py.
"""

import os
import sys

try:
    from _socket import AF_UNIX, SOCK_STREAM
    from _socket import socket as _socket_type
except ImportError:  # pragma: no cover - non-CPython
    from socket import AF_UNIX, SOCK_STREAM
    from socket import socket as _socket_type

CONNECT_WAIT_S = 10.0  # how long to wait for an auto-started master (DISTBUILD_CONNECT_WAIT)
CONNECT_POLL_S = 0.02


def _home():
    home = os.environ.get("DISTBUILD_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "cargo-distbuild")


def _exec_rustc(argv):
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, ("distbuild-wrap: cannot run " + argv[0] + ": " + str(e) + "\n").encode())
        os._exit(127)


def _fallback(home, argv):
    """Count the fallback (one byte appended to <home>/fallbacks) and run rustc."""
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = os.open(os.path.join(home, "fallbacks"), flags, 0o644)
        os.write(fd, b"f")
        os.close(fd)
    except OSError:
        pass
    _exec_rustc(argv)


def _connect(path):
    s = _socket_type(AF_UNIX, SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        s.close()
        return None
    return s


def _start_master(home):
    """Start the daemon detached from Cargo (new session, no inherited descriptors)."""
    os.makedirs(home, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            log = os.open(os.path.join(home, "master.log"), flags, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, 65536)
            build_vars = ("CARGO_", "RUSTC", "OUT_DIR", "RUST_", "MAKEFLAGS", "MFLAGS")
            env = {k: v for k, v in os.environ.items() if not k.startswith(build_vars)}
            python = os.environ.get("DISTBUILD_PYTHON") or sys.executable
            os.execve(python, [python, "-m", "distbuild.master.daemon"], env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def _recv_exact(s, n):
    parts = []
    while n:
        chunk = s.recv(min(n, 1048576))
        if not chunk:
            raise OSError("master closed the connection")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _request(s, argv):
    environ = os.environb
    fields = [b"C", os.getcwdb(), str(len(argv)).encode()]
    fields += [os.fsencode(a) for a in argv]
    fields += [k + b"=" + v for k, v in environ.items()]
    payload = b"\0".join(fields)
    s.sendall(b"DBW1" + len(payload).to_bytes(4, "little") + payload)
    head = _recv_exact(s, 8)
    if head[:4] != b"DBR1":
        raise OSError("bad reply from master")
    return _recv_exact(s, int.from_bytes(head[4:], "little"))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main():
    argv = sys.argv[1:]
    if not argv:
        sys.stderr.write("usage: distbuild-wrap RUSTC [ARGS...]  (set as RUSTC_WRAPPER)\n")
        return 2
    if os.environ.get("DISTBUILD_DISABLE") == "1":
        _exec_rustc(argv)
    home = _home()
    sock_path = os.path.join(home, "master.sock")
    s = _connect(sock_path)
    if s is None:
        try:
            _start_master(home)
        except OSError:
            _fallback(home, argv)
        waited = 0.0
        limit = float(os.environ.get("DISTBUILD_CONNECT_WAIT", CONNECT_WAIT_S))
        while s is None and waited < limit:
            time_sleep(CONNECT_POLL_S)
            waited += CONNECT_POLL_S
            s = _connect(sock_path)
        if s is None:
            _fallback(home, argv)
    try:
        s.settimeout(float(os.environ.get("DISTBUILD_REQUEST_TIMEOUT", "3600")))
        body = _request(s, argv)
    except (OSError, ValueError):
        _fallback(home, argv)
    finally:
        s.close()
    kind = body[:1]
    if kind == b"X":
        _exec_rustc(argv)
    if kind != b"R" or len(body) < 13:
        _fallback(home, argv)
    code = int.from_bytes(body[1:5], "little", signed=True)
    out_len = int.from_bytes(body[5:13], "little")
    _write_all(1, body[13:13 + out_len])
    _write_all(2, body[13 + out_len:])
    return code


def time_sleep(seconds):
    # `import time` is cheap but only needed on the slow path.
    import time

    time.sleep(seconds)


def run():
    """Entry point that skips interpreter shutdown: on a hit every millisecond counts."""
    code = main()
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
