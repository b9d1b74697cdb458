"""Pure logic of the docker executor and toolchain packaging (no engine needed)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from distbuild.errors import InvalidRequest, PathEscape
from distbuild.executors.base import ExecSpec
from distbuild.executors.docker_plan import Bind, grant_read, plan_container
from distbuild.scheduler.model import matches
from distbuild.toolchain.archive import write_archive
from distbuild.toolchain.rootfs import RootFs

RUSTC = "/toolchain/bin/rustc"


def _spec(*outputs: str, wd: str = "", props: tuple[tuple[str, str], ...] = ()) -> ExecSpec:
    return ExecSpec(argv=("/home/me/.rustup/toolchains/x/bin/rustc", "src/lib.rs"),
                    output_paths=outputs, working_directory=wd, properties=props)


def test_sandbox_is_mounted_read_only_at_its_own_path_with_writable_output_dirs(
        tmp_path: Path) -> None:
    """Default plan: the sandbox at its real path read-only, each output dir over it rw."""
    (tmp_path / "ws").mkdir()
    plan = plan_container(_spec("ws/target/deps/a.rlib", "ws/target/deps/a.d", wd="ws"),
                          tmp_path, RUSTC)
    real = Path(os.path.realpath(tmp_path))
    assert plan.binds == [Bind(real, str(real)),
                          Bind(real / "ws/target/deps", str(real / "ws/target/deps"), True)]
    assert plan.workdir == str(real / "ws")
    assert plan.argv == [RUSTC, "src/lib.rs"]
    assert plan.env == {"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp"}
    assert (tmp_path / "ws/target/deps").is_dir()


def test_nested_output_dirs_collapse_to_the_outermost(tmp_path: Path) -> None:
    """An output directory inside another writable one gets no second mount."""
    plan = plan_container(_spec("out/a", "out/sub/b", "other/c"), tmp_path, RUSTC)
    writable = sorted(b.target for b in plan.binds if b.writable)
    real = os.path.realpath(tmp_path)
    assert writable == [f"{real}/other", f"{real}/out"]


def test_input_root_slash_mounts_top_level_entries_at_the_clients_paths(tmp_path: Path) -> None:
    """input_root=/ reproduces client paths: sandbox/home -> /home."""
    (tmp_path / "home" / "me").mkdir(parents=True)
    plan = plan_container(_spec("home/me/out/x", wd="home/me", props=(("input_root", "/"),)),
                          tmp_path, RUSTC)
    real = Path(os.path.realpath(tmp_path))
    assert plan.binds == [Bind(real / "home", "/home"),
                          Bind(real / "home/me/out", "/home/me/out", True)]
    assert plan.workdir == "/home/me"


def test_an_output_at_the_top_makes_the_root_writable_without_a_second_mount(
        tmp_path: Path) -> None:
    """Docker refuses two mounts at one target: the writable one replaces the read-only one."""
    plan = plan_container(_spec("app", "deps/a.rlib"), tmp_path, RUSTC)
    real = Path(os.path.realpath(tmp_path))
    assert plan.binds == [Bind(real, str(real), True)]
    (tmp_path / "out").mkdir()
    plan = plan_container(_spec("out/x", props=(("input_root", "/"),)), tmp_path, RUSTC)
    assert plan.binds == [Bind(real / "out", "/out", True)]


@pytest.mark.parametrize("root", ["/usr", "/toolchain/x", "relative", "/tmp", "/a/../etc"])
def test_input_roots_that_would_hide_the_image_are_refused(tmp_path: Path, root: str) -> None:
    """The toolchain, libc and scratch space cannot be shadowed by an action's inputs."""
    with pytest.raises(InvalidRequest):
        plan_container(_spec("out/x", props=(("input_root", root),)), tmp_path, RUSTC)


def test_escaping_output_paths_are_refused(tmp_path: Path) -> None:
    """An output path leaving the sandbox, directly or through a symlink, is refused."""
    with pytest.raises(PathEscape):
        plan_container(_spec("../out/x"), tmp_path, RUSTC)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(PathEscape):
        plan_container(_spec("link/x"), tmp_path, RUSTC)


def test_grant_read_widens_private_inputs_only(tmp_path: Path) -> None:
    """0600 files become 0644, 0700 executables/dirs 0755; symlinks are left alone."""
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "f").write_text("x")
    os.chmod(tmp_path / "d" / "f", 0o600)
    (tmp_path / "d" / "exe").write_text("x")
    os.chmod(tmp_path / "d" / "exe", 0o700)
    (tmp_path / "d" / "l").symlink_to("f")
    assert grant_read(tmp_path / "d") == 3
    modes = {p.name: p.lstat().st_mode & 0o777 for p in (tmp_path / "d").iterdir()}
    assert modes == {"f": 0o644, "exe": 0o755, "l": 0o777}
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert grant_read(tmp_path / "d") == 0


def test_offered_star_matches_any_value() -> None:
    """A docker worker offering toolchain=* fits any shipped toolchain, nothing else changes."""
    offered = (("executor", "docker"), ("toolchain", "*"))
    assert matches((("executor", "docker"), ("toolchain", "ab/12")), offered)
    assert not matches((("executor", "local"), ("toolchain", "ab/12")), offered)
    assert not matches((("toolchain", "*"),), (("toolchain", "rustc-1"),))


def test_rootfs_records_every_symlink_on_the_way(tmp_path: Path) -> None:
    """Adding a path through symlinked directories and files keeps the whole chain."""
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "usr" / "lib" / "libx.so.1.2").write_bytes(b"\x7fELF...")
    (tmp_path / "usr" / "lib" / "libx.so.1").symlink_to("libx.so.1.2")
    fs = RootFs()
    real = fs.add_host_path(str(tmp_path / "lib" / "libx.so.1"))
    assert real == str(tmp_path / "usr" / "lib" / "libx.so.1.2")
    kinds = {p: e.kind for p, e in fs.entries.items() if p.startswith(str(tmp_path))}
    assert kinds[str(tmp_path / "lib")] == "symlink"
    assert kinds[str(tmp_path / "usr/lib/libx.so.1")] == "symlink"
    assert kinds[str(tmp_path / "usr/lib/libx.so.1.2")] == "file"


def test_archive_is_reproducible_and_normalized(tmp_path: Path) -> None:
    """Same content, other mtimes and owners: same bytes; entries are root-owned, mtime 0."""
    src = tmp_path / "f"
    src.write_bytes(b"payload" * 1000)
    digests = []
    for mtime in (1_000_000, 2_000_000):
        os.utime(src, (mtime, mtime))
        fs = RootFs()
        fs.add_file_as("/toolchain/bin/f", str(src))
        fs.add_symlink("/usr/bin/cc", "gcc")
        fs.add_data("/etc/passwd", b"root:x:0:0::/:/x\n")
        digests.append(write_archive(fs, tmp_path / f"a{mtime}.tar.gz").digest)
    assert digests[0] == digests[1]
    data = gzip.decompress((tmp_path / "a1000000.tar.gz").read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 0)}
