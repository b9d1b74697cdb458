"""distbuild-wrap: the compiler-wrapper shim Cargo runs instead of rustc.

Cargo calls ``distbuild-wrap /path/to/rustc ARGS...`` (RUSTC_WRAPPER or
RUSTC_WORKSPACE_WRAPPER). The shim hands the invocation to the local master over a Unix socket
and replays its answer; if the master cannot be reached, answers nonsense or dies mid-request,
the shim runs rustc itself (exec, so Cargo's jobserver descriptors and stdin stay intact) and
counts a fallback. ``DISTBUILD_DISABLE=1`` bypasses everything.

Standard library only, and as little of it as possible: this runs once per rustc invocation
and its start-up time is the floor of every cache hit. It uses the built-in ``posix`` module
rather than ``os`` (whose import alone costs about a millisecond under ``python -S``) and
``_socket`` rather than ``socket``. The wire format is documented in
distbuild/master/protocol.py.
"""

import posix
import sys

try:
    from _socket import AF_UNIX, SOCK_STREAM
    from _socket import socket as _socket_type
except ImportError:  # pragma: no cover - non-CPython
    from socket import AF_UNIX, SOCK_STREAM
    from socket import socket as _socket_type

CONNECT_WAIT_S = 10.0  # how long to wait for an auto-started master (DISTBUILD_CONNECT_WAIT)
CONNECT_POLL_S = 0.02
# After a master failed to start (<home>/master.failed says why), shims run rustc at once for
# this long instead of each paying for another failed start.
RETRY_START_S = 30.0
_ENV = posix.environ  # bytes -> bytes


def _getenv(name, default=""):
    value = _ENV.get(name.encode())
    return default if value is None else value.decode("utf-8", "surrogateescape")


def _home():
    home = _getenv("DISTBUILD_HOME")
    if not home:
        cache = _getenv("XDG_CACHE_HOME") or _getenv("HOME", "/") + "/.cache"
        home = cache + "/cargo-distbuild"
    if home.startswith("~"):
        home = _getenv("HOME", "/") + home[1:]
    if not home.startswith("/"):
        home = posix.getcwd() + "/" + home
    return home


def _exec_rustc(argv):
    program = argv[0]
    candidates = [program] if "/" in program else [
        d + "/" + program for d in _getenv("PATH", "/usr/bin:/bin").split(":") if d]
    for candidate in candidates:
        try:
            posix.execv(candidate, argv)
        except OSError:
            continue
    posix.write(2, ("distbuild-wrap: cannot run " + program + "\n").encode())
    posix._exit(127)


def _build_id():
    """``DISTBUILD_BUILD_ID`` if it is a plain name (it names a file), else ""."""
    build = _getenv("DISTBUILD_BUILD_ID")
    ok = 0 < len(build) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in build)
    return build if ok else ""


def _fallback(home, argv):
    """Count the fallback (one byte appended to <home>/fallbacks, and within a build to
    <home>/builds/<id>.fallbacks) and run rustc."""
    build = _build_id()
    files = [home + "/fallbacks"] + ([home + "/builds/" + build + ".fallbacks"] if build else [])
    for path in files:
        try:
            fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND, 0o644)
            posix.write(fd, b"f")
            posix.close(fd)
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


def _makedirs(path):
    parts = path.split("/")
    for i in range(2, len(parts) + 1):
        try:
            posix.mkdir("/".join(parts[:i]), 0o755)
        except OSError:
            pass


def _start_master(home):
    """Start the daemon detached from Cargo (new session, no inherited descriptors); returns
    its pid, so that a start that fails is noticed at once."""
    _makedirs(home)
    build_vars = (b"CARGO_", b"RUSTC", b"OUT_DIR", b"RUST_", b"MAKEFLAGS", b"MFLAGS")
    env = {k: v for k, v in _ENV.items() if not k.startswith(build_vars)}
    # The daemon runs in "/": paths it is given must not be relative to our directory.
    env[b"DISTBUILD_HOME"] = home.encode("utf-8", "surrogateescape")
    config = env.get(b"DISTBUILD_CONFIG", b"")
    if config and not config.startswith((b"/", b"~")):
        env[b"DISTBUILD_CONFIG"] = posix.getcwdb() + b"/" + config
    python = _getenv("DISTBUILD_PYTHON") or sys.executable
    pid = posix.fork()
    if pid == 0:
        try:
            posix.setsid()
            flags = posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND
            log = posix.open(home + "/master.log", flags, 0o644)
            null = posix.open("/dev/null", posix.O_RDONLY)
            posix.dup2(null, 0)
            posix.dup2(log, 1)
            posix.dup2(log, 2)
            posix.closerange(3, 65536)
            posix.chdir("/")
            posix.execve(python, [python, "-m", "distbuild.master.daemon"], env)
        finally:
            posix._exit(127)
    return pid


def _failed_recently(home):
    import time  # only without a master: the hit path never gets here

    try:
        return time.time() - posix.stat(home + "/master.failed").st_mtime < RETRY_START_S
    except OSError:
        return False


def _mark_failed(home):
    """Note that starting a master failed (the master itself writes why when it can)."""
    path = home + "/master.failed"
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND, 0o644)
        if posix.fstat(fd).st_size == 0:
            posix.write(fd, b"the master did not come up; see master.log\n")
        posix.close(fd)
        posix.utime(path)
    except OSError:
        pass


def _wait_for_master(home, sock_path, pid):
    """Connect to the master just started as ``pid``; None when it failed to start."""
    waited = 0.0
    limit = float(_getenv("DISTBUILD_CONNECT_WAIT", str(CONNECT_WAIT_S)))
    while waited < limit:
        _sleep(CONNECT_POLL_S)
        waited += CONNECT_POLL_S
        s = _connect(sock_path)
        if s is not None:
            return s
        if pid:
            done, status = posix.waitpid(pid, posix.WNOHANG)
            if done:
                if status != 0:
                    break  # it could not start: do not wait out the limit
                pid = 0  # another master holds the lock: it will answer
    _mark_failed(home)
    return None


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
    fields = [b"C", posix.getcwdb(), str(len(argv)).encode()]
    fields += [a.encode("utf-8", "surrogateescape") for a in argv]
    fields += [k + b"=" + v for k, v in _ENV.items()]
    payload = b"\0".join(fields)
    s.sendall(b"DBW1" + len(payload).to_bytes(4, "little") + payload)
    head = _recv_exact(s, 8)
    if head[:4] != b"DBR1":
        raise OSError("bad reply from master")
    return _recv_exact(s, int.from_bytes(head[4:], "little"))


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = posix.write(fd, view)
        view = view[n:]


def main():
    argv = sys.argv[1:]
    if not argv:
        posix.write(2, b"usage: distbuild-wrap RUSTC [ARGS...]  (set as RUSTC_WRAPPER)\n")
        return 2
    if _getenv("DISTBUILD_DISABLE") == "1":
        _exec_rustc(argv)
    home = _home()
    sock_path = home + "/master.sock"
    s = _connect(sock_path)
    if s is None:
        if _failed_recently(home):
            _fallback(home, argv)
        try:
            pid = _start_master(home)
        except OSError:
            _fallback(home, argv)
        s = _wait_for_master(home, sock_path, pid)
        if s is None:
            _fallback(home, argv)
    try:
        s.settimeout(float(_getenv("DISTBUILD_REQUEST_TIMEOUT", "3600")))
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


def _sleep(seconds):
    import time  # only on the slow path (waiting for a master to start)

    time.sleep(seconds)


def run():
    """Entry point that skips interpreter shutdown: on a hit every millisecond counts."""
    try:
        code = main()
    except Exception:  # a bug in the shim must not break the build either
        if len(sys.argv) > 1:
            _fallback(_home(), sys.argv[1:])
        raise
    posix._exit(code)


if __name__ == "__main__":
    run()
