"""Configuration loading and the documented defaults."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from distbuild.config import SECTIONS, Config, load_config, parse_size
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


def test_repository_config_documents_every_key() -> None:
    """config.toml names every section and every key the loader knows, and no others."""
    documented = tomllib.loads((REPO / "config.toml").read_text())
    assert set(documented) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert set(documented[name]) == {f.name for f in dataclasses.fields(cls)}, name


@pytest.mark.parametrize(("text", "named"), [
    ("[cache]\nmax_size = true\n", "[cache] max_size must be a size"),
    ("[cache]\nmax_size = -5\n", "[cache] max_size must be greater than 0"),
    ("[cache]\nmax_size = \"lots\"\n", "[cache] max_size: not a size"),
    ("[cache]\ngc_target = 1.5\n", "[cache] gc_target must be in (0, 1]"),
    ("cache = 5\n", "[cache] must be a table"),
    ("[master]\nexecution = \"turbo\"\n", "[master] execution must be one of"),
    ("[master]\njobs = true\n", "[master] jobs must be an integer"),
    ("[master]\nidle_timeout = -1\n", "[master] idle_timeout must be greater than 0"),
    ("[master]\nrequest_timeout = \"soon\"\n", "[master] request_timeout must be a number"),
    ("[scheduler]\nmax_attempts = 0\n", "[scheduler] max_attempts must be at least 1"),
    ("[scheduler]\njob_timeout = -3.0\n", "[scheduler] job_timeout must be greater than 0"),
    ("[scheduler]\nheartbeat_timeout = 0\n", "heartbeat_timeout must be greater than 0"),
    ("[scheduler]\nexecutor = \"podman\"\n", "[scheduler] executor must be one of"),
    ("[scheduler]\naddr = \"localhost\"\n", "[scheduler] addr must be host:port"),
    ("[worker]\nexecutor = \"local,qemu\"\n", "unknown executor(s) 'qemu'"),
    ("[worker]\nmemory_limit = \"huge\"\n", "[worker] memory_limit must be a size"),
    ("[worker]\nwasm_fuel = 0\n", "[worker] wasm_fuel must be greater than 0"),
    ("[auth]\ntls_ca = \"/nonexistent/ca.pem\"\n", "/nonexistent/ca.pem does not exist"),
    ("[auth]\ntls_cert = \"CFG_DIR/c.toml\"\n", "tls_cert and tls_key go together"),
    ("[nonsense]\nx = 1\n", "unknown section(s) ['nonsense']"),
])
def test_invalid_values_are_refused_naming_file_and_key(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, named: str) -> None:
    """Wrong types (a bool for a size), ranges, choices, scalars for tables and missing TLS
    files are refused at load time; the message names the file, section and key."""
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(text.replace("CFG_DIR", str(tmp_path)))
    monkeypatch.setenv("DISTBUILD_CONFIG", str(cfg_file))
    with pytest.raises(ConfigError) as err:
        load_config()
    assert named in str(err.value)
    assert str(cfg_file) in str(err.value)


def test_non_utf8_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A config file that is not UTF-8 is refused with the file named, not a traceback."""
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_bytes(b"[cache]\nmax_size = \"10 GiB\" # caf\xe9\n")
    monkeypatch.setenv("DISTBUILD_CONFIG", str(cfg_file))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config()


def test_bad_environment_override_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """DISTBUILD_CACHE_SIZE and DISTBUILD_SCHEDULER are checked like the keys they set."""
    monkeypatch.setenv("DISTBUILD_HOME", str(tmp_path))
    monkeypatch.delenv("DISTBUILD_CONFIG", raising=False)
    monkeypatch.setenv("DISTBUILD_CACHE_SIZE", "a lot")
    with pytest.raises(ConfigError, match="DISTBUILD_CACHE_SIZE"):
        load_config()
    monkeypatch.delenv("DISTBUILD_CACHE_SIZE")
    monkeypatch.setenv("DISTBUILD_SCHEDULER", "no-port")
    with pytest.raises(ConfigError, match="DISTBUILD_SCHEDULER must be host:port"):
        load_config()


def test_valid_values_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Integers where numbers go, size strings, executor lists and existing TLS files load."""
    pem = tmp_path / "x.pem"
    pem.write_text("pem")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f"[cache]\nmax_size = 1048576\n[master]\nidle_timeout = 60\n"
                        f"[worker]\nexecutor = \"local,wasm\"\n"
                        f"[auth]\ntls_cert = \"{pem}\"\ntls_key = \"{pem}\"\n")
    monkeypatch.setenv("DISTBUILD_CONFIG", str(cfg_file))
    cfg = load_config()
    assert (cfg.cache.max_size, cfg.master.idle_timeout) == (1 << 20, 60.0)
    assert cfg.worker.executor == "local,wasm"
