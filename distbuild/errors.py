"""The one exception tree of cargo-distbuild.

::

    DistbuildError
    ├── ConfigError            config.toml or an environment override is invalid
    ├── InvalidRequest         malformed input from a client (refused, nothing stored)
    │   ├── InvalidDigest      not "<64 hex>/<size>" or size out of range
    │   ├── PathEscape         a path would leave its sandbox ("..", absolute, symlink out)
    │   ├── BlobTooLarge       a blob above the store's size cap
    │   └── UnknownJob         no job with that id
    ├── CasError
    │   ├── BlobNotFound       the store does not hold the blob
    │   │   └── MissingBlobs   blobs an action needs are not in the CAS (REAPI: MISSING)
    │   └── CorruptBlob        the bytes do not match their digest (removed, never served)
    ├── ExecutionError         an action could not be run (infrastructure, not a compile error)
    │   ├── ExecutorUnavailable  e.g. no Docker engine, wasmtime missing
    │   ├── ActionTimeout      killed after its deadline
    │   ├── ActionCancelled
    │   ├── LimitExceeded      out of fuel, memory or output cap, not runnable: retrying cannot help
    │   └── LocalError         this machine's files refused (ENOSPC, EACCES...): not the cluster's
    │                          fault, and no other attempt would fare better
    └── RemoteError            talking to a scheduler / worker / remote CAS failed
        ├── Unavailable        not reachable
        │   ├── Unresponsive   reachable, or was, but answered nothing in time (frozen, black hole)
        │   └── NoSuitableWorker  no live worker matches the action's platform
        ├── AuthError          token missing or wrong
        ├── JobFailed          a remote job could not be run (infrastructure, after retries)
        └── IncompleteInputs   a sandboxed compile lacked a file its inputs were guessed without

Expected outcomes (a cache miss, "not cacheable", "not a compilation") are return values,
never exceptions.
"""

from __future__ import annotations


class DistbuildError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DistbuildError):
    """The configuration is invalid; the message names the key and the file."""


class InvalidRequest(DistbuildError):
    """A request is malformed and was refused without side effects."""


class InvalidDigest(InvalidRequest):
    """A digest string or size is malformed."""


class PathEscape(InvalidRequest):
    """A path would escape the directory it must stay in."""


class BlobTooLarge(InvalidRequest):
    """A blob is larger than the store accepts."""


class UnknownJob(InvalidRequest):
    """No job has this id."""


class CasError(DistbuildError):
    """Content-addressed storage failure."""


class BlobNotFound(CasError):
    """The blob is not in the store."""


class MissingBlobs(BlobNotFound):
    """Blobs an action needs are not in the CAS; ``subjects`` names each as
    ``blobs/{hash}/{size}`` (REAPI's PreconditionFailure subject)."""

    def __init__(self, message: str, subjects: tuple[str, ...] = ()):
        super().__init__(message)
        self.subjects = subjects


class CorruptBlob(CasError):
    """Stored or received bytes do not hash to their digest."""


class ExecutionError(DistbuildError):
    """An action could not be executed for a reason other than its own exit code."""


class ExecutorUnavailable(ExecutionError):
    """The executor's backend (Docker engine, wasmtime, toolchain) is missing."""


class ActionTimeout(ExecutionError):
    """The action ran past its deadline and was killed."""


class ActionCancelled(ExecutionError):
    """The action was cancelled and its process killed."""


class LimitExceeded(ExecutionError):
    """The action hit a deterministic limit (fuel, memory, output size) or cannot be run at all
    (an invalid module): another attempt or another worker would end the same way."""


class LocalError(ExecutionError):
    """An operation on this machine's own files failed (no space, no permission, ...): a local
    problem, never retried as if the cluster had failed."""


class RemoteError(DistbuildError):
    """A remote service failed."""


class Unavailable(RemoteError):
    """The remote service could not be reached."""


class Unresponsive(Unavailable):
    """The remote service answered nothing within its time (a frozen process, a network black
    hole): unlike a refused connection (a restart), waiting for it is not worth it."""


class AuthError(RemoteError):
    """The remote service refused our credentials."""


class NoSuitableWorker(Unavailable):
    """No live worker matches the action's platform (executor, toolchain, os/arch)."""


class JobFailed(RemoteError):
    """A remote job failed for a reason other than its exit code (after any retries)."""


class IncompleteInputs(RemoteError):
    """A compile whose inputs were guessed (its package) failed on a file it was not given."""
