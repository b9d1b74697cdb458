"""A compile's action as a REAPI farm runs it (distbuild/master/farm_action.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from distbuild.cas.digest import SHA256, digest_bytes
from distbuild.codec import decode_directory
from distbuild.errors import CorruptBlob
from distbuild.master.farm_action import DigestMap, Relocation, translate_action
from distbuild.master.farm_runner import choose_function
from distbuild.rustc.paths import TARGET, WORKSPACE
from distbuild.scheduler.action_builder import InputFile, PreparedAction, prepare_action
from distbuild.worker.materialize import SANDBOX_ROOT

ROOTS = {WORKSPACE: "/home/ann/src/proj", TARGET: "/home/ann/src/proj/target"}


def _prepared(root: str) -> PreparedAction:
    """The action RemoteRunner would build for one compile in a checkout at ``root``."""
    tree = root.lstrip("/")
    files = {f"{tree}/src/lib.rs": InputFile.of(b"pub fn f() {}\n"),
             f"{tree}/target/debug/deps/libdep-1.rmeta": InputFile.of(b"rmeta bytes")}
    env = {"CARGO_MANIFEST_DIR": f"{SANDBOX_ROOT}{root}", "DISTBUILD_HOME": "/home/ann/.db",
           "RUSTC_WRAPPER": "/home/ann/.db/bin/distbuild-wrap",
           "LD_LIBRARY_PATH": f"{root}/target/debug/deps:/usr/lib"}
    return prepare_action(
        ["rustc", "src/lib.rs", f"--out-dir={SANDBOX_ROOT}{root}/target/debug/deps",
         f"-L dependency={SANDBOX_ROOT}{root}/target/debug/deps"],
        files, output_paths=("target/debug/deps/libproj-2.rlib",), env=env,
        working_directory=tree, platform=(("executor", "local"), ("os", "linux")))


def _farm(root: str, digests: DigestMap | None = None) -> PreparedAction:
    roots = {WORKSPACE: root, TARGET: f"{root}/target"}
    return translate_action(_prepared(root), (("OSFamily", "linux"),), digests,
                            Relocation.of_roots(roots))


def test_two_checkouts_make_one_farm_action(tmp_path: Path) -> None:
    """The same compile in two checkouts (and two DISTBUILD_HOMEs) is one farm action: the
    roots move to fixed places, this machine's own variables are dropped."""
    a, b = _farm("/home/ann/src/proj"), _farm("/tmp/ci/build-7/proj")
    assert a.digest == b.digest
    command = a.command
    env = dict(command.environment)
    assert "DISTBUILD_HOME" not in env and "RUSTC_WRAPPER" not in env
    assert env["CARGO_MANIFEST_DIR"] == f"{SANDBOX_ROOT}/ws"
    assert env["LD_LIBRARY_PATH"] == f"{SANDBOX_ROOT}/target/debug/deps:/usr/lib"
    assert command.working_directory == "ws"
    assert command.output_paths == ("../target/debug/deps/libproj-2.rlib",)
    assert f"--out-dir={SANDBOX_ROOT}/target/debug/deps" in command.arguments
    assert command.platform == (("OSFamily", "linux"),)


def test_sha256_farm_action_names_every_blob_by_sha256(tmp_path: Path) -> None:
    """For a SHA-256 farm every file, Directory, the Command and the Action are named by
    their SHA-256 digests, and the files sit at their relocated paths."""
    digests = DigestMap(tmp_path / "map.sqlite", SHA256)
    farm = _farm("/home/ann/src/proj", digests)
    for digest, source in farm.blobs.items():
        assert isinstance(source, bytes)
        assert digest.hash == hashlib.sha256(source).hexdigest()
    root = decode_directory(farm.blobs[farm.action.input_root_digest])
    assert [n.name for n in root.directories] == ["target", "ws"]
    lib_rs = digest_bytes(b"pub fn f() {}\n")
    assert digests.get(lib_rs) == digest_bytes(b"pub fn f() {}\n", SHA256)


def test_digest_map_persists_and_refuses_a_changed_file(tmp_path: Path) -> None:
    """The BLAKE3 -> SHA-256 map survives a restart; a file that changed since its BLAKE3
    digest was taken is refused, not mapped to the wrong digest."""
    src = tmp_path / "f.rs"
    src.write_text("one")
    blake = digest_bytes(b"one")
    first = DigestMap(tmp_path / "map.sqlite", SHA256)
    assert first.of_source(blake, src) == digest_bytes(b"one", SHA256)
    first.close()
    again = DigestMap(tmp_path / "map.sqlite", SHA256)
    assert again.get(blake) == digest_bytes(b"one", SHA256)
    src.write_text("two")
    with pytest.raises(CorruptBlob):
        again.of_source(digest_bytes(b"three"), src)


def test_relocation_restores_this_machines_paths() -> None:
    """Dep-info and compiler messages from the farm get this machine's roots back, and only
    whole path components move."""
    reloc = Relocation.of_roots(ROOTS)
    farm_text = (f"{SANDBOX_ROOT}/ws/src/lib.rs: {SANDBOX_ROOT}/target/debug/x.rmeta "
                 f"{SANDBOX_ROOT}/wsx/other").encode()
    assert reloc.restore(farm_text) == (
        f"{SANDBOX_ROOT}/home/ann/src/proj/src/lib.rs: "
        f"{SANDBOX_ROOT}/home/ann/src/proj/target/debug/x.rmeta {SANDBOX_ROOT}/wsx/other").encode()


def test_digest_function_follows_the_farms_capabilities() -> None:
    """auto picks BLAKE3 where a farm offers it, SHA-256 otherwise; a setting the farm cannot
    meet is a configuration error naming what it offers."""
    assert choose_function("auto", ("SHA256", "BLAKE3"), "farm").name == "BLAKE3"
    assert choose_function("auto", ("SHA256",), "farm") is SHA256
    with pytest.raises(Exception, match="offers SHA256"):
        choose_function("blake3", ("SHA256",), "farm")
