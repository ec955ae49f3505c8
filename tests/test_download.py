import hashlib
import socket

import pytest

from pipeline.download import ChecksumError, DownloadError, download
from tests.http_fixture import serve


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    payload = bytes(range(256)) * 4000
    (folder / "data.bin").write_bytes(payload)
    (folder / "corrupt.bin").write_bytes(payload[:-1] + b"\x00")
    return folder, payload


def test_download_verifies_checksum(served, tmp_path):
    folder, payload = served
    with serve(folder) as (url, _):
        path = download(url + "data.bin", tmp_path / "out" / "data.bin", md5(payload), progress=False)
    assert path.read_bytes() == payload
    assert not (tmp_path / "out" / "data.bin.part").exists()


def test_corrupt_file_is_refused_and_removed(served, tmp_path):
    folder, payload = served
    with serve(folder) as (url, _), pytest.raises(ChecksumError, match="expected " + md5(payload)):
        download(url + "corrupt.bin", tmp_path / "corrupt.bin", md5(payload), progress=False)
    assert list(tmp_path.glob("corrupt.bin*")) == []


def test_resume_sends_a_range_and_completes(served, tmp_path):
    folder, payload = served
    (tmp_path / "data.bin.part").write_bytes(payload[:300_000])
    with serve(folder) as (url, handler):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert handler.ranges_seen == ["bytes=300000-"]
    assert (tmp_path / "data.bin").read_bytes() == payload


def test_server_ignoring_ranges_restarts_cleanly(served, tmp_path):
    folder, payload = served
    (tmp_path / "data.bin.part").write_bytes(b"garbage" * 10)
    with serve(folder, honour_ranges=False) as (url, _):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert (tmp_path / "data.bin").read_bytes() == payload


def test_existing_verified_file_needs_no_network(served, tmp_path):
    _, payload = served
    (tmp_path / "data.bin").write_bytes(payload)
    assert download("http://127.0.0.1:9/never", tmp_path / "data.bin", md5(payload)).read_bytes() == payload


def test_offline_and_http_errors_are_explained(served, tmp_path):
    folder, _ = served
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="offline, download it elsewhere and place it at"):
        download(f"http://127.0.0.1:{closed}/x", tmp_path / "x", progress=False, timeout=5)
    with serve(folder) as (url, _), pytest.raises(DownloadError, match="HTTP 404"):
        download(url + "missing.bin", tmp_path / "missing.bin", progress=False)
