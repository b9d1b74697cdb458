"""REAPI Capabilities: what our servers advertise, and what a server (ours or a farm's) offers.

Advertised: SHA-256 and BLAKE3 for the cache (and for execution, when the scheduler runs
actions), SHA-256 as the singular ``ExecutionCapabilities.digest_function`` that clients older
than v2.3 read (Bazel 4 checks it against its own, SHA-256), API versions 2.0 to 2.3, action
cache updates allowed, absolute symlinks refused, no compressors.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb
from distbuild._proto.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from distbuild._proto.build.bazel.semver import semver_pb2
from distbuild.cas.digest import SHA256, DigestFunction
from distbuild.errors import RemoteError
from distbuild.reapi.convert import SUPPORTED, function_to_proto
from distbuild.rpc.status import error_from_rpc, guarded

LOW_API = (2, 0)
HIGH_API = (2, 3)
MAX_BATCH_BYTES = 4 << 20  # what we accept per batch call (our clients stay under 3 MiB)


class CapabilitiesServicer(re_grpc.CapabilitiesServicer):
    def __init__(self, exec_enabled: bool, instance: str = ""):
        self.exec_enabled = exec_enabled
        self.instance = instance

    @guarded
    def GetCapabilities(self, request: re_pb.GetCapabilitiesRequest,
                        context: grpc.ServicerContext) -> re_pb.ServerCapabilities:
        functions = [function_to_proto(f) for f in SUPPORTED]
        caps = re_pb.ServerCapabilities(
            cache_capabilities=re_pb.CacheCapabilities(
                digest_functions=functions,
                action_cache_update_capabilities=re_pb.ActionCacheUpdateCapabilities(
                    update_enabled=True),
                max_batch_total_size_bytes=MAX_BATCH_BYTES,
                symlink_absolute_path_strategy=re_pb.SymlinkAbsolutePathStrategy.DISALLOWED),
            deprecated_api_version=_semver(LOW_API), low_api_version=_semver(LOW_API),
            high_api_version=_semver(HIGH_API))
        if self.exec_enabled:
            caps.execution_capabilities.CopyFrom(re_pb.ExecutionCapabilities(
                digest_function=function_to_proto(SHA256), exec_enabled=True,
                digest_functions=functions))
        return caps


def add_capabilities(server: grpc.Server, exec_enabled: bool) -> None:
    re_grpc.add_CapabilitiesServicer_to_server(CapabilitiesServicer(exec_enabled), server)


def _semver(version: tuple[int, int]) -> semver_pb2.SemVer:
    return semver_pb2.SemVer(major=version[0], minor=version[1])


# -- client side --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerCaps:
    """A server's capabilities, as far as our clients care."""

    cache_functions: tuple[str, ...]  # REAPI names ("SHA256", "BLAKE3"...), as offered
    exec_functions: tuple[str, ...]
    exec_enabled: bool
    cache_update_enabled: bool
    max_batch_bytes: int  # 0: no limit of the server's own
    api: tuple[tuple[int, int], tuple[int, int]]  # (low, high)

    def choose(self, preferred: tuple[DigestFunction, ...] = SUPPORTED,
               execution: bool = False) -> DigestFunction | None:
        """The first of ``preferred`` the server offers (for execution too, if asked)."""
        offered = set(self.exec_functions if execution else self.cache_functions)
        return next((f for f in preferred if f.name in offered), None)


def fetch_capabilities(channel: grpc.Channel, instance: str = "",
                       timeout: float = 30.0) -> ServerCaps:
    """Ask a REAPI server what it offers (RemoteError subclasses on failure)."""
    stub = re_grpc.CapabilitiesStub(channel)
    try:
        caps = stub.GetCapabilities(re_pb.GetCapabilitiesRequest(instance_name=instance),
                                    timeout=timeout)
    except grpc.RpcError as e:
        raise error_from_rpc(e, "REAPI capabilities") from e
    names = re_pb.DigestFunction.Value.Name
    known = set(re_pb.DigestFunction.Value.values())
    ex = caps.execution_capabilities
    exec_functions = [*ex.digest_functions] or ([ex.digest_function]
                                                if ex.digest_function else [])
    if not caps.HasField("cache_capabilities") and not ex.exec_enabled:
        raise RemoteError("the server advertises neither a cache nor execution")
    return ServerCaps(
        cache_functions=tuple(names(v) for v in caps.cache_capabilities.digest_functions
                              if v in known),
        exec_functions=tuple(names(v) for v in exec_functions if v in known),
        exec_enabled=ex.exec_enabled,
        cache_update_enabled=caps.cache_capabilities.action_cache_update_capabilities
        .update_enabled,
        max_batch_bytes=caps.cache_capabilities.max_batch_total_size_bytes,
        api=((caps.low_api_version.major, caps.low_api_version.minor),
             (caps.high_api_version.major, caps.high_api_version.minor)))
