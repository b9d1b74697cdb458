"""The Docker engine for tests: a client, or a skip that prints why there is none."""

from __future__ import annotations

import docker
import pytest

from distbuild.errors import ExecutorUnavailable
from distbuild.executors.docker import connect


def connect_or_skip() -> docker.APIClient:
    """An API client for the local engine; skips the test (saying why) when none answers."""
    try:
        return connect()
    except ExecutorUnavailable as e:
        print(f"SKIP reason: {e}")
        pytest.skip(str(e))
