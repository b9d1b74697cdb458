"""The local CAS: atomic writes, verified reads, LRU eviction."""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from distbuild.cas.digest import Digest, digest_bytes, digest_file
from distbuild.cas.store import LocalCAS
from distbuild.errors import BlobNotFound, CorruptBlob, InvalidDigest


def test_put_get_roundtrip(tmp_path: Path) -> None:
    """Bytes stored come back identical, under their BLAKE3 digest."""
    cas = LocalCAS(tmp_path)
    d = cas.put_bytes(b"hello")
    assert d == digest_bytes(b"hello")
    assert d.size == 5 and len(d.hash) == 64
    assert cas.get_bytes(d) == b"hello"
    assert cas.path_of(d).parent.name == d.hash[:2]


def test_put_file_streams_and_copy_to(tmp_path: Path) -> None:
    """A file larger than one chunk is stored and copied out with the same digest."""
    src = tmp_path / "big"
    src.write_bytes(os.urandom(3 * (1 << 20) + 17))
    cas = LocalCAS(tmp_path / "cas")
    d = cas.put_file(src)
    assert d == digest_file(src)
    out = tmp_path / "out"
    cas.copy_to(d, out, 0o755)
    assert out.read_bytes() == src.read_bytes()
    assert os.access(out, os.X_OK)


def test_corrupt_blob_is_removed_and_never_served(tmp_path: Path) -> None:
    """A blob whose bytes changed raises CorruptBlob, is deleted, and leaves no output."""
    cas = LocalCAS(tmp_path / "cas")
    d = cas.put_bytes(b"x" * 1000)
    cas.path_of(d).write_bytes(b"y" * 1000)
    dest = tmp_path / "dest"
    with pytest.raises(CorruptBlob):
        cas.copy_to(d, dest)
    assert not dest.exists()
    assert not cas.path_of(d).exists()
    with pytest.raises(BlobNotFound):
        cas.get_bytes(d)


def test_truncated_blob_is_corrupt(tmp_path: Path) -> None:
    """A truncated blob is detected too."""
    cas = LocalCAS(tmp_path)
    d = cas.put_bytes(b"abcdef")
    cas.path_of(d).write_bytes(b"abc")
    assert not cas.contains(d)
    with pytest.raises(CorruptBlob):
        cas.get_bytes(d)


def test_put_stream_refuses_mismatched_digest(tmp_path: Path) -> None:
    """Upload with a claimed digest that does not match stores nothing."""
    cas = LocalCAS(tmp_path)
    claimed = digest_bytes(b"other")
    with pytest.raises(CorruptBlob):
        cas.put_stream(io.BytesIO(b"data"), expected=claimed)
    assert list(cas.list()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_gc_evicts_least_recently_used(tmp_path: Path) -> None:
    """gc removes the oldest-used blobs first until under the target fraction of the cap."""
    cas = LocalCAS(tmp_path, max_size=3000, gc_target=0.5)
    digests = [cas.put_bytes(bytes([i]) * 1000) for i in range(4)]
    for i, d in enumerate(digests):
        os.utime(cas.path_of(d), (1000 + i, 1000 + i))
    cas.get_bytes(digests[0])  # now the most recently used
    report = cas.gc()
    assert report.removed == 3
    assert cas.contains(digests[0])
    assert not any(cas.contains(d) for d in digests[1:])
    assert report.remaining_bytes == 1000


def test_verify_reports_corrupt(tmp_path: Path) -> None:
    """verify re-hashes everything and lists (and removes) the corrupt blobs."""
    cas = LocalCAS(tmp_path)
    good = cas.put_bytes(b"good")
    bad = cas.put_bytes(b"bad!")
    cas.path_of(bad).write_bytes(b"BAD!")
    report = cas.verify()
    assert report.checked == 2
    assert report.corrupt == [str(bad)]
    assert cas.contains(good)


def _writer(root: str, seed: int) -> list[str]:
    cas = LocalCAS(root)
    return [str(cas.put_bytes(f"blob-{i % 7}".encode() * 5000)) for i in range(seed, seed + 40)]


def test_concurrent_writers_from_many_processes(tmp_path: Path) -> None:
    """Several processes writing the same and different blobs at once leave a consistent store."""
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_writer, [str(tmp_path)] * 4, range(4)))
    cas = LocalCAS(tmp_path)
    for digests in results:
        for text in digests:
            d = Digest.parse(text)
            assert cas.get_bytes(d) == digest_blob(d, text)
    assert len(list(cas.list())) == 7
    assert list((tmp_path / "tmp").iterdir()) == []


def digest_blob(d: Digest, text: str) -> bytes:
    for i in range(7):
        data = f"blob-{i}".encode() * 5000
        if digest_bytes(data) == d:
            return data
    raise AssertionError(f"unexpected digest {text}")


def test_digest_parse_validates() -> None:
    """Malformed digest strings are refused with InvalidDigest."""
    d = digest_bytes(b"z")
    assert Digest.parse(str(d)) == d
    for bad in ("nothex/1", f"{d.hash}", f"{d.hash}/x", f"{d.hash[:-1]}/1", f"{d.hash}/-1"):
        with pytest.raises(InvalidDigest):
            Digest.parse(bad)


def test_lru_touch_on_read(tmp_path: Path) -> None:
    """Reading a blob refreshes its last-use time."""
    cas = LocalCAS(tmp_path)
    d = cas.put_bytes(b"touch me")
    os.utime(cas.path_of(d), (1000, 1000))
    cas.get_bytes(d)
    assert cas.path_of(d).stat().st_mtime > time.time() - 60


def _aged(cas: LocalCAS, data: bytes, age_s: float) -> Digest:
    """A blob last used ``age_s`` seconds ago."""
    d = cas.put_bytes(data)
    t = time.time() - age_s
    os.utime(cas.path_of(d), (t, t))
    return d


def test_verify_keeps_lru_order(tmp_path: Path) -> None:
    """`verify` reads every blob but marks none as used: the next gc still evicts the least
    recently used first."""
    cas = LocalCAS(tmp_path, gc_target=1.0)
    oldest = _aged(cas, b"a" * 100, 3000)
    middle = _aged(cas, b"b" * 100, 2000)
    newest = _aged(cas, b"c" * 100, 1000)
    before = {d: cas.path_of(d).stat().st_mtime for d in (oldest, middle, newest)}
    assert cas.verify().checked == 3
    assert {d: cas.path_of(d).stat().st_mtime for d in before} == before
    report = cas.gc(max_size=200)
    assert report.removed == 1
    assert (cas.contains(oldest), cas.contains(middle), cas.contains(newest)) == (
        False, True, True)


def test_stray_files_are_skipped_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    """A stray file in blobs/, a non-hash name in a shard, a directory or a blob in the wrong
    shard: list, verify and gc skip each with a warning and go on."""
    cas = LocalCAS(tmp_path, gc_target=1.0)
    kept = _aged(cas, b"kept", 10)
    gone = _aged(cas, b"x" * 1000, 5000)
    (tmp_path / "blobs" / "README").write_text("stray")
    (tmp_path / "blobs" / "ab").mkdir(exist_ok=True)
    (tmp_path / "blobs" / "ab" / "notes.txt").write_text("stray")
    (tmp_path / "blobs" / "ab" / ("ab" + "0" * 62)).mkdir()
    wrong = tmp_path / "blobs" / "ab" / ("cd" + "0" * 62)
    wrong.write_text("misplaced")
    with caplog.at_level("WARNING"):
        assert {b.digest for b in cas.list()} == {kept, gone}
        assert cas.verify().checked == 2
        assert cas.gc(max_size=100).removed == 1
    assert cas.contains(kept) and not cas.contains(gone)
    assert "notes.txt" in caplog.text and "README" in caplog.text
    assert wrong.exists(), "a stray file is skipped, never deleted as if it were a blob"
