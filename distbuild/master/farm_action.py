"""A compile's action as a REAPI farm runs it, and the farm's results back in our terms.

Paths: our own cluster's input tree mirrors the compile's absolute paths; a farm's puts the
workspace, the target directory and CARGO_HOME at fixed places (``Relocation``), so the action
does not depend on where the project is checked out and a second machine hits the farm's
action cache. Dep-info files and stdout/stderr get this machine's paths back on the way in.

Digests: our BLAKE3 actions in a farm's digest function, and the farm's results back in BLAKE3.

The master, its cache and its own cluster name every blob by BLAKE3. A REAPI farm that lacks
BLAKE3 (BuildGrid, bazel-remote) names them by SHA-256, so an action bound for it is rewritten:
every input file gets its SHA-256 digest, every Directory of the input tree is re-encoded with
its children's new digests, then the Command and the Action. Results come back the other way:
each output is downloaded from the farm (verified against its SHA-256 digest) into the master's
BLAKE3 store.

``DigestMap`` remembers BLAKE3 -> SHA-256 for every blob seen, on disk, so an input that does
not change (a dependency's rlib, a source file) is hashed a second time once, not per action,
and local hits never touch any of this.
"""

from __future__ import annotations

import os
import posixpath
import re
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from distbuild.actions import ActionResult, OutputFile
from distbuild.cas.digest import BLAKE3, CHUNK, Digest, DigestFunction, digest_bytes
from distbuild.cas.store import LocalCAS
from distbuild.codec import decode_directory
from distbuild.errors import CorruptBlob, InvalidRequest
from distbuild.reapi.cas_client import RemoteCAS
from distbuild.rustc.paths import CARGO_HOME, TARGET, WORKSPACE
from distbuild.scheduler.action_builder import BlobSource, InputFile, PreparedAction, prepare_action
from distbuild.worker.materialize import SANDBOX_ROOT

Properties = tuple[tuple[str, str], ...]


class DigestMap:
    """BLAKE3 digest -> digest of ``function``, kept in an SQLite file (thread-safe)."""

    def __init__(self, path: Path, function: DigestFunction):
        self.function = function
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS map (blake3 TEXT PRIMARY KEY, other TEXT)")
        self._lock = threading.Lock()
        self._memo: dict[Digest, Digest] = {}

    def close(self) -> None:
        self._db.close()

    def get(self, blake3: Digest) -> Digest | None:
        hit = self._memo.get(blake3)
        if hit is None:
            with self._lock:
                row = self._db.execute("SELECT other FROM map WHERE blake3 = ?",
                                       (str(blake3),)).fetchone()
            if row is not None:
                hit = Digest.parse(row[0])
                self._memo[blake3] = hit
        return hit

    def put(self, blake3: Digest, other: Digest) -> None:
        if self._memo.get(blake3) == other:
            return
        self._memo[blake3] = other
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO map VALUES (?, ?)", (str(blake3), str(other)))

    def of_source(self, blake3: Digest, source: BlobSource) -> Digest:
        """The ``function`` digest of a blob known by its BLAKE3 digest; hashing a file, both
        digests come from one read, so a file changed since it was first hashed is refused
        rather than mapped wrongly."""
        known = self.get(blake3)
        if known is not None:
            return known
        if isinstance(source, bytes):
            other = digest_bytes(source, self.function)
            check = digest_bytes(source)
        else:
            other, check = _two_digests(Path(source), self.function)
        if check != blake3:
            raise CorruptBlob(f"{source if not isinstance(source, bytes) else 'a blob'} changed "
                              f"while the action was prepared ({blake3} -> {check})")
        self.put(blake3, other)
        return other


def _two_digests(path: Path, function: DigestFunction) -> tuple[Digest, Digest]:
    theirs, ours, size = function.hasher(), BLAKE3.hasher(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            theirs.update(chunk)
            ours.update(chunk)
            size += len(chunk)
    return Digest(theirs.hexdigest(), size), Digest(ours.hexdigest(), size)


# Where each root of a compile (``CompileJob.roots``) goes in a farm action's input tree.
PLACES = {WORKSPACE: "ws", TARGET: "target", CARGO_HOME: "cargo-home"}
# Environment that names this machine's cargo-distbuild, not anything rustc reads.
LOCAL_ENV = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER")
LOCAL_ENV_PREFIX = "DISTBUILD_"
# Variables our cluster passes as they are (they name this machine's tools) but that also list
# directories under a root: Cargo puts the target's deps directory in LD_LIBRARY_PATH.
SEARCH_PATH_ENV = ("LD_LIBRARY_PATH",)


@dataclass(frozen=True)
class Relocation:
    """Moves a compile's roots to fixed places of the input tree (``PLACES``), so the same
    compile in another checkout, or by another user, is the same action and hits the farm's
    action cache. ``moves``: (root's path in the tree, its place), deepest root first."""

    moves: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of_roots(cls, roots: dict[str, str]) -> Relocation:
        pairs = [(os.path.normpath(path).lstrip("/"), PLACES[ph])
                 for ph, path in roots.items() if ph in PLACES and path and path != "/"]
        return cls(tuple(sorted(pairs, key=lambda p: len(p[0]), reverse=True)))

    def path(self, rel: str) -> str:
        """A tree path (relative to the input root) at its new place."""
        for old, new in self.moves:
            if rel == old or rel.startswith(old + "/"):
                return new + rel[len(old):]
        return rel

    def output(self, path: str, working_directory: str) -> str:
        """An output path (relative to ``working_directory``, as REAPI names them) relative to
        the working directory's new place."""
        full = posixpath.normpath(posixpath.join(working_directory, path))
        return posixpath.relpath(self.path(full), self.path(working_directory) or ".")

    def text(self, text: str) -> str:
        """Sandbox-rooted paths in an argument or variable moved to their places."""
        return self._sub(text, [(SANDBOX_ROOT + "/" + old, SANDBOX_ROOT + "/" + new)
                                for old, new in self.moves])

    def absolute(self, text: str) -> str:
        """Plain absolute paths under a root moved to their places in the sandbox."""
        return self._sub(text, [("/" + old, SANDBOX_ROOT + "/" + new) for old, new in self.moves],
                         always=True)

    def restore(self, data: bytes) -> bytes:
        """The inverse of ``text`` on output bytes (dep-info, stdout, stderr)."""
        pairs = [(SANDBOX_ROOT + "/" + new, SANDBOX_ROOT + "/" + old) for old, new in self.moves]
        return self._sub(data.decode("utf-8", "surrogateescape"), pairs).encode(
            "utf-8", "surrogateescape")

    @staticmethod
    def _sub(text: str, pairs: list[tuple[str, str]], always: bool = False) -> str:
        if not pairs or (SANDBOX_ROOT not in text and not always):
            return text
        table = dict(pairs)
        pattern = re.compile("|".join(re.escape(a) for a, _ in pairs) + _END)
        return pattern.sub(lambda m: table[m.group(0)], text)


_END = r"(?![A-Za-z0-9._+-])"  # a root matches only where a path component ends


def translate_action(prepared: PreparedAction, platform: Properties,
                     digests: DigestMap | None, relocation: Relocation = Relocation()
                     ) -> PreparedAction:
    """``prepared`` (BLAKE3) as a farm runs it: its roots relocated, this machine's own
    variables dropped, its platform replaced by ``platform`` and, with ``digests``, every digest
    in that map's function. The blobs of the result are the farm's.

    Raises InvalidRequest if the tree names a blob ``prepared`` does not carry.
    """
    function = digests.function if digests is not None else BLAKE3
    files: dict[str, InputFile] = {}
    dirs: list[str] = []

    def blob(digest: Digest) -> BlobSource:
        try:
            return prepared.blobs[digest]
        except KeyError:
            raise InvalidRequest(f"the action's tree names {digest}, which it does not carry") \
                from None

    def walk(digest: Digest, rel: str) -> None:
        data = blob(digest)
        assert isinstance(data, bytes)
        d = decode_directory(data)
        if not d.files and not d.directories and rel:
            dirs.append(relocation.path(rel))
        for f in d.files:
            source = blob(f.digest)
            new = digests.of_source(f.digest, source) if digests is not None else f.digest
            files[relocation.path(posixpath.join(rel, f.name))] = InputFile(
                new, source, f.is_executable)
        for n in d.directories:
            walk(n.digest, posixpath.join(rel, n.name))

    walk(prepared.action.input_root_digest, "")
    command = prepared.command
    env = {k: relocation.absolute(v) if k in SEARCH_PATH_ENV else relocation.text(v)
           for k, v in command.environment
           if k not in LOCAL_ENV and not k.startswith(LOCAL_ENV_PREFIX)}
    working_directory = relocation.path(command.working_directory)
    return prepare_action(
        [relocation.text(a) for a in command.arguments], files,
        output_paths=tuple(relocation.output(o, command.working_directory)
                           for o in command.output_paths), env=env,
        working_directory=working_directory, platform=platform,
        timeout_s=prepared.action.timeout_s, do_not_cache=prepared.action.do_not_cache,
        dirs=tuple(dirs), function=function)


def localize_result(result: ActionResult, farm: RemoteCAS, local: LocalCAS,
                    digests: DigestMap | None, relocation: Relocation) -> ActionResult:
    """``result`` (in the farm's digests, paths at their farm places) with every blob it
    names downloaded into ``local`` (BLAKE3) and named by its BLAKE3 digest there; dep-info
    files, stdout and stderr get their paths back under this machine's roots."""

    def fetch(digest: Digest, text: bool) -> Digest:
        data = farm.get_bytes(digest)  # verified against ``digest``
        if text:
            data = relocation.restore(data)
        ours = local.put_bytes(data)
        if digests is not None and not text:
            digests.put(ours, digest)
        return ours

    files = tuple(OutputFile(o.path, fetch(o.digest, o.path.endswith(".d")), o.is_executable)
                  for o in result.output_files)
    return replace(
        result, output_files=files,
        stdout_digest=fetch(result.stdout_digest, True) if result.stdout_digest else None,
        stderr_digest=fetch(result.stderr_digest, True) if result.stderr_digest else None)
