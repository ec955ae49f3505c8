import contextlib
import gzip
import hashlib
import io
import random
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.archives import extract_member
from pipeline.download import ChecksumError, CorruptArchiveError, DownloadError, download
from pipeline.formats import InputFormatError
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


# -- every download verified: first-use checksums, announced lengths, archive integrity ----------------

CLOSED = "http://127.0.0.1:9/"  # nothing listens there: any network access fails


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _noise(size: int) -> bytes:
    return random.Random(size).randbytes(size)  # incompressible: archives as long as their content


def _gz() -> bytes:
    return gzip.compress(_noise(200_000))


def _zip(damage: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("set/corpus.jsonl", _noise(100_000))
        bundle.writestr("set/queries.jsonl", _noise(100_000))
    data = bytearray(buffer.getvalue())
    if damage:  # a byte of the first member's data: the central directory is intact, the CRC is not
        data[1000] ^= 0xFF
    return bytes(data)


def _lines(path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("name", "body", "message"), [
    ("d2q.jsonl.gz", _gz()[:100_000], "complete gzip stream"),
    ("scifact.zip", _zip()[:150_000], "complete zip archive"),
    ("scifact.zip", _zip(damage=True), r"member set/corpus\.jsonl fails its CRC check"),
], ids=["gz-truncated", "zip-truncated", "zip-bad-crc"])
def test_damaged_archive_without_md5_or_content_length_is_refused(tmp_path, name, body, message):
    """The issue's probe: a body cut short with no Content-Length was renamed into place and returned."""
    with scripted(200, {}, body) as url, pytest.raises(CorruptArchiveError, match=message) as caught:
        download(url + name, tmp_path / name, progress=False, timeout=5)
    assert "truncated or corrupt" in str(caught.value) and url + name in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no file, no .part to resume from, nothing recorded


@pytest.mark.parametrize(("status", "headers"), [
    (200, {"Content-Length": "1024000"}),
    (206, {"Content-Range": "bytes 300000-1023999/1024000"}),
    (206, {"Content-Range": "bytes 300000-1023999/1024000", "Content-Length": "100000"}),
    (206, {"Content-Range": "bytes 300000-399999/1024000", "Content-Length": "100000"}),
], ids=["200-short-of-content-length", "206-short-of-content-range", "206-length-disagrees", "206-not-to-the-end"])
def test_body_shorter_than_announced_is_refused(served, tmp_path, status, headers):
    folder, payload = served
    assert len(payload) == 1_024_000
    start = 300_000 if status == 206 else 0
    if start:
        (tmp_path / "data.bin.part").write_bytes(payload[:start])  # resuming: asks for bytes=300000-
    with scripted(status, headers, payload[start:start + 100_000]) as url, pytest.raises(DownloadError):
        download(url + "data.bin", tmp_path / "data.bin", progress=False, timeout=5)
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "checksums.tsv").exists()
    # Whatever .part is left resumes (or restarts) to the right file.
    with serve(folder) as (url, _):
        assert download(url + "data.bin", tmp_path / "data.bin", progress=False).read_bytes() == payload


def test_first_download_records_size_and_sha256_then_verifies_offline(served, tmp_path):
    folder, payload = served
    dest = tmp_path / "data.bin"
    with serve(folder) as (url, _):
        download(url + "data.bin", dest, progress=False)
    assert _lines(tmp_path / "checksums.tsv") == [["name", "size", "sha256", "url"],
                                                  ["data.bin", str(len(payload)), sha256(payload), url + "data.bin"]]
    # The server is gone: the file in place is verified against the record, without the network.
    assert download(CLOSED + "data.bin", dest, progress=False).read_bytes() == payload
    # Same size, one byte changed: not returned; it is deleted and fetched again (here: offline, so an error).
    dest.write_bytes(payload[:-1] + b"\x00")
    with pytest.raises(DownloadError, match="place it at"):
        download(CLOSED + "data.bin", dest, progress=False, timeout=5)
    assert not dest.exists()


def test_garbage_in_place_with_a_recorded_checksum_is_fetched_again(served, tmp_path, caplog):
    """The issue's probe: a 7-byte garbage file at the destination was returned without network access."""
    folder, payload = served
    dest = tmp_path / "data.bin"
    with serve(folder) as (url, _):
        download(url + "data.bin", dest, progress=False)
        dest.write_bytes(b"garbage")
        assert download(url + "data.bin", dest, progress=False).read_bytes() == payload
    assert "has size 7, not the size 1024000" in caplog.text and "recorded on first use" in caplog.text


def test_publisher_change_is_an_error_until_its_line_is_deleted(served, tmp_path):
    folder, _ = served
    dest = tmp_path / "dl" / "data.bin"
    with serve(folder) as (url, _):
        download(url + "data.bin", dest, progress=False)
        (folder / "data.bin").write_bytes(b"a new version")
        dest.write_bytes(b"garbage")
        with pytest.raises(ChecksumError, match=r"checksums\.tsv, line 2 recorded size 1024000 .*delete that line"):
            download(url + "data.bin", dest, progress=False)
        # Neither the garbage nor the new download is left behind.
        assert sorted(p.name for p in dest.parent.iterdir()) == [".checksums.tsv.lock", "checksums.tsv"]
        lines = (dest.parent / "checksums.tsv").read_text().splitlines()
        (dest.parent / "checksums.tsv").write_text(lines[0] + "\n")  # the user deletes the line
        assert download(url + "data.bin", dest, progress=False).read_bytes() == b"a new version"
    assert _lines(dest.parent / "checksums.tsv")[1][1:3] == ["13", sha256(b"a new version")]


def test_file_placed_by_hand_is_checked_then_pinned(tmp_path, caplog):
    good, name = _gz(), "d2q.jsonl.gz"
    (tmp_path / name).write_bytes(good)  # e.g. fetched elsewhere, as the offline hint suggests
    assert download(CLOSED + name, tmp_path / name, progress=False).read_bytes() == good
    assert _lines(tmp_path / "checksums.tsv")[1][:3] == [name, str(len(good)), sha256(good)]
    assert "passed the gzip integrity check" in caplog.text
    # A damaged archive placed by hand is not used: it is deleted and fetched again.
    www = tmp_path / "www"
    www.mkdir()
    (www / "other.gz").write_bytes(good)
    (tmp_path / "other.gz").write_bytes(good[:-100])
    with serve(www) as (url, _):
        assert download(url + "other.gz", tmp_path / "other.gz", progress=False).read_bytes() == good
    assert "not a complete gzip stream" in caplog.text


def test_resumed_first_download_is_recorded_whole(served, tmp_path):
    folder, payload = served
    (tmp_path / "data.bin.part").write_bytes(payload[:300_000])
    with serve(folder) as (url, handler):
        download(url + "data.bin", tmp_path / "data.bin", progress=False)
    assert handler.ranges_seen == ["bytes=300000-"]
    assert _lines(tmp_path / "checksums.tsv")[1][1:3] == [str(len(payload)), sha256(payload)]


def test_checksums_file_is_shared_sorted_and_strict(served, tmp_path):
    folder, _ = served
    lock = tmp_path / "downloads" / "checksums.tsv"
    (folder / "b.gz").write_bytes(_gz())
    with serve(folder) as (url, _):
        download(url + "data.bin", tmp_path / "downloads" / "z" / "data.bin", progress=False, checksums=lock)
        download(url + "b.gz", tmp_path / "downloads" / "b.gz", progress=False, checksums=lock)
    assert [fields[0] for fields in _lines(lock)] == ["name", "b.gz", "z/data.bin"]
    lock.write_text(lock.read_text() + "broken line\n")
    with pytest.raises(InputFormatError, match=r"checksums\.tsv, line 4: expected 'name<TAB>size<TAB>sha256<TAB>url'"):
        download(CLOSED + "b.gz", tmp_path / "downloads" / "b.gz", progress=False, checksums=lock)


def test_parallel_first_uses_keep_every_line(tmp_path):
    from pipeline.download import _record_first

    lock = tmp_path / "checksums.tsv"
    threads = [threading.Thread(target=_record_first, args=(lock, f"f{i:02d}", i, "0" * 64, "u")) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [fields[0] for fields in _lines(lock)[1:]] == [f"f{i:02d}" for i in range(16)]


def test_published_md5_is_what_verifies_and_nothing_is_recorded(served, tmp_path):
    folder, payload = served
    (tmp_path / "checksums.tsv").write_text(f"name\tsize\tsha256\turl\ndata.bin\t1\t{'0' * 64}\tx\n")
    with serve(folder) as (url, _):
        download(url + "data.bin", tmp_path / "data.bin", md5(payload), progress=False)
    assert download(CLOSED, tmp_path / "data.bin", md5(payload)).read_bytes() == payload
    assert (tmp_path / "checksums.tsv").read_text().count("\n") == 2  # untouched
