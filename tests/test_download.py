import contextlib
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.download import ChecksumError, DownloadError, download, extract_member
from pipeline.io import InputFormatError
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


class _Scripted(BaseHTTPRequestHandler):
    """Answers every GET with `status`, `headers` and `body` (which may be shorter than announced)."""

    status, headers_out, body = 200, {}, b""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(self.body)
        self.close_connection = True


@contextlib.contextmanager
def scripted(status: int, headers: dict[str, str], body: bytes = b""):
    handler = type("Handler", (_Scripted,), {"status": status, "headers_out": headers, "body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_complete_part_is_finished_without_refetching(served, tmp_path):
    _, payload = served
    (tmp_path / "data.bin.part").write_bytes(payload)  # a crash between the last byte and the rename
    with scripted(416, {"Content-Range": f"bytes */{len(payload)}"}) as url:
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert (tmp_path / "data.bin").read_bytes() == payload


def test_part_longer_than_the_remote_file_is_restarted(served, tmp_path):
    folder, payload = served
    (tmp_path / "data.bin.part").write_bytes(payload + b"stale tail")
    with serve(folder) as (url, handler):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert handler.ranges_seen == [f"bytes={len(payload) + 10}-"]
    assert (tmp_path / "data.bin").read_bytes() == payload


def test_existing_file_with_a_wrong_checksum_is_fetched_again(served, tmp_path):
    folder, payload = served
    (tmp_path / "data.bin").write_bytes(b"an older version")
    with serve(folder) as (url, _):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert (tmp_path / "data.bin").read_bytes() == payload


def test_interrupted_transfer_keeps_the_part_and_resumes(served, tmp_path):
    folder, payload = served
    half = len(payload) // 2
    with scripted(200, {"Content-Length": str(len(payload))}, payload[:half]) as url, \
            pytest.raises(DownloadError, match="place it at"):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False, timeout=5)
    assert (tmp_path / "data.bin.part").stat().st_size == half
    with serve(folder) as (url, handler):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert handler.ranges_seen == [f"bytes={half}-"]
    assert (tmp_path / "data.bin").read_bytes() == payload


def _archives(folder, members: dict[str, bytes]):
    with tarfile.open(folder / "bundle.tar.gz", "w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(folder / "bundle.zip", "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return folder / "bundle.tar.gz", folder / "bundle.zip"


@pytest.mark.parametrize("kind", [0, 1], ids=["tar.gz", "zip"])
def test_extract_member_by_path_suffix(tmp_path, kind):
    archive = _archives(tmp_path, {"set/qrels/test.tsv": b"t", "set/mycorpus.jsonl": b"x"})[kind]
    assert extract_member(archive, "qrels/test.tsv", tmp_path / "out" / "test.tsv").read_bytes() == b"t"
    pattern = r"bundle\.(tar\.gz|zip): expected .*member named \.\.\./corpus\.jsonl"
    with pytest.raises(InputFormatError, match=pattern):  # mycorpus.jsonl is not a match
        extract_member(archive, "corpus.jsonl", tmp_path / "out" / "corpus.jsonl")
    assert not (tmp_path / "out" / "corpus.jsonl").exists()


def test_ambiguous_zip_member_and_broken_archive_are_refused(tmp_path):
    _, zipped = _archives(tmp_path, {"a/corpus.jsonl": b"1", "b/corpus.jsonl": b"2"})
    with pytest.raises(InputFormatError, match="exactly one member"):
        extract_member(zipped, "corpus.jsonl", tmp_path / "corpus.jsonl")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes((tmp_path / "bundle.tar.gz").read_bytes()[:40])
    with pytest.raises(InputFormatError, match=r"broken\.tar\.gz: expected a complete, readable archive"):
        extract_member(broken, "corpus.jsonl", tmp_path / "corpus.jsonl")
    assert not (tmp_path / "corpus.jsonl").exists()
