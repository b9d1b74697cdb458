"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.buildgrid import BuildGridFarm, farm_or_skip


@pytest.fixture(scope="session")
def buildgrid_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildGridFarm]:
    """One BuildGrid farm (with its PostgreSQL) for every test that needs one: starting it
    takes about 25 s. Tests start their own bots and use their own actions."""
    farm = farm_or_skip(tmp_path_factory.mktemp("buildgrid"))
    yield farm
    farm.close()
