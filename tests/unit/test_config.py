"""Configuration loading and the documented defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from distbuild.config import Config, load_config, parse_size
from distbuild.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_repository_config_documents_the_defaults(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """The top-level config.toml holds exactly the built-in defaults."""
    monkeypatch.setenv("DISTBUILD_HOME", str(tmp_path))
    monkeypatch.setenv("DISTBUILD_CONFIG", str(REPO / "config.toml"))
    for var in ("DISTBUILD_SCHEDULER", "DISTBUILD_TOKEN", "DISTBUILD_CACHE_SIZE"):
        monkeypatch.delenv(var, raising=False)
    loaded = load_config()
    assert dataclasses.replace(loaded, home=tmp_path) == Config(home=tmp_path)


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """DISTBUILD_HOME, DISTBUILD_SCHEDULER and DISTBUILD_CACHE_SIZE override the file."""
    monkeypatch.setenv("DISTBUILD_HOME", str(tmp_path))
    monkeypatch.delenv("DISTBUILD_CONFIG", raising=False)
    monkeypatch.setenv("DISTBUILD_SCHEDULER", "127.0.0.1:7000")
    monkeypatch.setenv("DISTBUILD_CACHE_SIZE", "2 GiB")
    cfg = load_config()
    assert cfg.home == tmp_path
    assert cfg.scheduler.addr == "127.0.0.1:7000"
    assert cfg.cache.max_size == 2 << 30


def test_unknown_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A typo in config.toml names the key and the file."""
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[cache]\nmax_sise = 1\n")
    monkeypatch.setenv("DISTBUILD_CONFIG", str(cfg_file))
    with pytest.raises(ConfigError, match="max_sise"):
        load_config()


def test_parse_size() -> None:
    """Sizes accept binary units and plain integers."""
    assert parse_size("10 GiB") == 10 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size(1234) == 1234
    with pytest.raises(ConfigError):
        parse_size("lots")
