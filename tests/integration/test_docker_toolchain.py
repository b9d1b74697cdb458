"""Toolchains as content: packaging is memoized and reproducible, and two toolchains never mix.

The machine has one rustup toolchain; the second is a copy of it (hard links) whose sysroot
differs by one file. Its image is removed at the end; the host toolchain's image is kept
between runs on purpose (see docs/docker.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from distbuild.config import Config
from distbuild.executors.base import ExecSpec
from distbuild.scheduler.action_builder import InputFile, prepare_action
from distbuild.toolchain import ensure_toolchain

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

pytest.importorskip("docker")

from distbuild.executors.docker import DockerExecutor, connect  # noqa: E402
from distbuild.executors.docker_image import image_tag, remove_toolchain_image  # noqa: E402
from distbuild.executors.docker_testing import (  # noqa: E402
    build_probe,
    host_rustc,
    host_toolchain,
    leftover_containers,
)
from tests.integration.docker_engine import connect_or_skip  # noqa: E402


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _copy_toolchain(sysroot: Path, dest: Path) -> Path:
    """A hard-linked copy of what gets packaged (bin/rustc and lib/)."""
    _link_or_copy(sysroot / "bin" / "rustc", dest / "bin" / "rustc")
    for root, _, files in os.walk(sysroot / "lib"):
        for name in files:
            src = Path(root) / name
            _link_or_copy(src, dest / src.relative_to(sysroot))
    return dest


def test_two_toolchains_give_two_digests_two_images_and_distinct_actions(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """A sysroot differing by one file is another toolchain: digest, image and action key."""
    api = connect_or_skip()
    cache = Path(request.config.cache.mkdir("distbuild-docker"))
    store, first = host_toolchain(cache)
    sysroot = Path(first.sysroot)
    copy = _copy_toolchain(sysroot, tmp_path / "toolchain-copy")
    std_so = next((copy / "lib/rustlib" / first.host / "lib").glob("libstd-*.so"))
    data = std_so.read_bytes()
    std_so.unlink()  # break the hard link before changing the file
    std_so.write_bytes(data + b"\0")
    second = ensure_toolchain(str(copy / "bin" / "rustc"), store, tmp_path / "memo")
    assert second.digest != first.digest
    assert second.version == first.version

    worker_id = f"test-toolchains-{uuid.uuid4().hex[:8]}"
    executor = DockerExecutor(Config(home=tmp_path / "home"), store, worker_id=worker_id,
                              api=api)
    box = tmp_path / "sandbox"
    (box / "bin").mkdir(parents=True)
    build_probe(box / "bin" / "probe")
    try:
        images = [executor._images.ensure(t.digest) for t in (first, second)]
        assert [i.ref for i in images] == [image_tag(first.digest), image_tag(second.digest)]
        assert images[0].image_id != images[1].image_id
        sizes = []
        for tc in (first, second):
            probe = ExecSpec(argv=("bin/probe", "size", f"/toolchain/{std_so.relative_to(copy)}"),
                             output_paths=("out/x",), properties=(tc.platform_property,))
            out = executor.run(probe, box, threading.Event())
            sizes.append(int(out.stdout))
            version = executor.run(ExecSpec(argv=(tc.rustc, "-V"), output_paths=("out/x",),
                                            properties=(tc.platform_property,)),
                                   box, threading.Event())
            assert version.stdout.decode().strip() == tc.version
        assert sizes == [len(data), len(data) + 1]
    finally:
        executor.close()
        remove_toolchain_image(connect(), second.digest)
    assert leftover_containers(connect(), worker_id) == []

    files = {"src/lib.rs": InputFile.of(b"pub fn f() {}\n")}
    keys = {prepare_action(["rustc", "--crate-type=rlib", "src/lib.rs"], files,
                           platform=(("executor", "docker"), tc.platform_property)).digest
            for tc in (first, second)}
    assert len(keys) == 2, "the same compile under two toolchains must have two action keys"


def test_packaging_is_memoized_and_reproducible(request: pytest.FixtureRequest,
                                                tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A second call is a stat walk; a copy elsewhere, or rewritten, packages bit-identical."""
    cache = Path(request.config.cache.mkdir("distbuild-docker"))
    store, first = host_toolchain(cache)
    start = time.monotonic()
    again = ensure_toolchain(host_rustc(), store, cache / "toolchains")
    assert again == first
    assert time.monotonic() - start < 1.0
    copy = _copy_toolchain(Path(first.sysroot), tmp_path / "copy")
    a = ensure_toolchain(str(copy / "bin" / "rustc"), store, tmp_path / "memo")
    assert a.digest == first.digest, "the install location must not change the identity"
    rlib = next((copy / "lib/rustlib" / first.host / "lib").glob("libcore-*.rlib"))
    content = rlib.read_bytes()
    rlib.unlink()
    rlib.write_bytes(content)  # same bytes, new inode and mtime: the memo must not trust it
    with caplog.at_level(logging.INFO, logger="distbuild.toolchain.package"):
        b = ensure_toolchain(str(copy / "bin" / "rustc"), store, tmp_path / "memo")
    assert "packaged" in caplog.text, "a changed sysroot file must cause repackaging"
    assert b.digest == a.digest
