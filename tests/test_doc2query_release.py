"""The published doc2query predictions, downloaded: docTTTTTquery's md5-verified zip and the Hugging Face jsonl."""

import gzip
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pipeline.doc2query import release
from pipeline.doc2query.expand import expand_collection
from pipeline.doc2query.predictions import fetch_predictions
from pipeline.doc2query.release import ARCHIVE, convert_release, member_name
from pipeline.download import ChecksumError
from pipeline.formats import InputFormatError, read_predictions, write_id_text
from tests.http_fixture import serve

FOLDER = "predicted_queries_topk_sampling/"
CHUNKS = (4, 3)  # passages per chunk (the release: 1,000,000 each, the last shorter)
SAMPLES = 3


def jsonl(records, ensure_ascii: bool = True) -> str:
    return "".join(json.dumps({"id": pid, "predicted_queries": queries}, ensure_ascii=ensure_ascii) + "\n"
                   for pid, queries in records)


def release_members() -> dict[str, bytes]:
    """The release's layout at toy size: sample s's query for passage p in chunk c's member."""
    members, pid = {}, 0
    for chunk, size in enumerate(CHUNKS):
        for sample in range(SAMPLES):
            lines = [f"what is passage {pid + j} sample {sample}" + (" d\u00e9j\u00e0 vu" if j == 1 else "")
                     for j in range(size)]
            members[FOLDER + member_name(sample, chunk)] = "".join(line + "\n" for line in lines).encode()
        pid += size
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return path.read_bytes()


def readme_recipe(archive: Path, samples: int, scratch: Path) -> list[str]:
    """The docTTTTTquery README's recipe: `paste -d" "` the samples of each chunk, `cat` the chunks in order."""
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(scratch)
    lines = []
    for chunk in range(len(CHUNKS)):
        files = [scratch / FOLDER / member_name(sample, chunk) for sample in range(samples)]
        pasted = subprocess.run(["paste", "-d", " ", *files], check=True, capture_output=True).stdout
        lines += pasted.decode().splitlines()
    return lines


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the docTTTTTquery zip: the pipeline's default ------------------------------------------------

@pytest.mark.skipif(shutil.which("paste") is None, reason="needs coreutils' paste")
def test_release_is_fetched_verified_and_converted_like_the_readme_recipe(tmp_path, monkeypatch):
    data = write_zip(tmp_path / "www" / ARCHIVE, release_members())
    out = tmp_path / "predictions.jsonl"
    with serve(tmp_path / "www") as (url, _):
        # The first mirror is gone (HTTP 404): the next one serves the archive.
        monkeypatch.setattr(release, "URLS", (url + "gone/" + ARCHIVE, url + ARCHIVE))
        monkeypatch.setattr(release, "MD5", md5(data))
        release.main(["--download-dir", str(tmp_path / "dl"), "--samples", "2", "--out", str(out)])
    records = list(read_predictions(out))
    assert [pid for pid, _ in records] == [str(i) for i in range(sum(CHUNKS))]  # the passage index
    assert all(len(queries) == 2 for _, queries in records)  # only the samples asked for
    assert [" ".join(queries) for _, queries in records] == readme_recipe(tmp_path / "dl" / ARCHIVE, 2,
                                                                            tmp_path / "recipe")
    assert records[1][1][1] == "what is passage 1 sample 1 d\u00e9j\u00e0 vu"
    assert (tmp_path / "dl" / ARCHIVE).read_bytes() == data


def test_corrupt_release_is_refused_by_checksum(tmp_path, monkeypatch):
    good = write_zip(tmp_path / "good.zip", release_members())
    middle = len(good) // 2
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / ARCHIVE).write_bytes(good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:])
    out = tmp_path / "predictions.jsonl"
    with serve(tmp_path / "www") as (url, _), pytest.raises(ChecksumError, match="md5 mismatch"):
        monkeypatch.setattr(release, "URLS", (url + ARCHIVE,))
        monkeypatch.setattr(release, "MD5", md5(good))
        release.main(["--download-dir", str(tmp_path / "dl"), "--out", str(out), "--samples", "1"])
    assert not out.exists()
    assert not list((tmp_path / "dl").iterdir())


def _short_member(members: dict[str, bytes]) -> None:
    name = FOLDER + member_name(2, 0)
    members[name] = members[name].rsplit(b"\n", 2)[0] + b"\n"  # drops the chunk's last line


def _missing_member(members: dict[str, bytes]) -> None:
    del members[FOLDER + member_name(1, 1)]


def _bad_utf8(members: dict[str, bytes]) -> None:
    members[FOLDER + member_name(0, 1)] = b"fine\n\xff broken\nfine\n"


@pytest.mark.parametrize(("damage", "samples", "where", "line", "message"), [
    (_short_member, 3, member_name(2, 0), 4, f"a line 4, as {FOLDER}{member_name(0, 0)} has one"),
    (_missing_member, 2, None, None, f"a member {member_name(1, 1)}"),
    (None, 4, None, None, f"{member_name(3, 0)} .*holds samples up to 002"),
    (_bad_utf8, 1, member_name(0, 1), 2, "UTF-8 text"),
])
def test_malformed_release_names_member_and_line(tmp_path, damage, samples, where, line, message):
    members = release_members()
    if damage is not None:
        damage(members)
    write_zip(tmp_path / ARCHIVE, members)
    with pytest.raises(InputFormatError, match=message) as caught:
        convert_release(tmp_path / ARCHIVE, tmp_path / "out.jsonl", samples, progress=False)
    archive = str(tmp_path / ARCHIVE)
    assert caught.value.path == (f"{archive}:{FOLDER}{where}" if where else archive)
    assert caught.value.line == line
    assert not (tmp_path / "out.jsonl").exists()


def test_truncated_or_corrupt_archive_is_named(tmp_path):
    data = write_zip(tmp_path / "whole.zip", release_members())
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFormatError, match="complete zip archive") as caught:
        convert_release(tmp_path / "cut.zip", tmp_path / "out.jsonl", 1, progress=False)
    assert caught.value.path == str(tmp_path / "cut.zip")
    # Damaged compressed bytes inside one member (what an unverified copy could hold): that member is named.
    name = FOLDER + member_name(0, 1)
    with zipfile.ZipFile(tmp_path / "whole.zip") as zipped:
        info = zipped.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # after the local header
    damaged = bytearray(data)
    for offset in range(start, start + info.compress_size):
        damaged[offset] ^= 0x55
    (tmp_path / "damaged.zip").write_bytes(bytes(damaged))
    with pytest.raises(InputFormatError, match="intact compressed data") as caught:
        convert_release(tmp_path / "damaged.zip", tmp_path / "out.jsonl", 1, progress=False)
    assert caught.value.path == f"{tmp_path / 'damaged.zip'}:{name}"
    assert not (tmp_path / "out.jsonl").exists()


def test_expansion_checks_the_release_against_the_collection(tmp_path):
    """pids are passage indices: a collection shorter or longer than the release stops with file and line."""
    write_zip(tmp_path / ARCHIVE, release_members())
    predictions = tmp_path / "predictions.jsonl"
    total = convert_release(tmp_path / ARCHIVE, predictions, 1, progress=False)
    passages = [(str(pid), f"passage text {pid}") for pid in range(total + 1)]
    write_id_text(tmp_path / "same.tsv", passages[:total])
    counts = expand_collection(tmp_path / "same.tsv", predictions, tmp_path / "out.tsv", missing="error")
    assert counts == {"passages": total, "expanded": total, "without_predictions": 0, "unknown_skipped": 0}
    write_id_text(tmp_path / "shorter.tsv", passages[: total - 1])
    with pytest.raises(InputFormatError, match=f"{total - 1} is not in it") as caught:
        expand_collection(tmp_path / "shorter.tsv", predictions, tmp_path / "out.tsv", missing="error")
    assert (caught.value.path, caught.value.line) == (str(predictions), total)
    write_id_text(tmp_path / "longer.tsv", passages)
    with pytest.raises(InputFormatError, match=f"{total} has none") as caught:
        expand_collection(tmp_path / "longer.tsv", predictions, tmp_path / "out.tsv", missing="error")
    assert (caught.value.path, caught.value.line) == (str(tmp_path / "longer.tsv"), total + 1)
    assert expand_collection(tmp_path / "longer.tsv", predictions, tmp_path / "out.tsv")["without_predictions"] == 1


# -- the Hugging Face jsonl (doc2query.download.release: jsonl; no md5 published) ------------------

def test_parts_are_downloaded_verified_and_merged_in_order(tmp_path):
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    first = gzip.compress(b'{"id": 0, "predicted_queries": ["a b", "c"]}\n'
                          + jsonl([("1", ["d\u00e9j\u00e0 vu"])]).encode())
    (www / "part0.jsonl.gz").write_bytes(first)
    (www / "sub" / "part1.jsonl.gz").write_bytes(gzip.compress(jsonl([("2", [])]).encode()))
    with serve(www) as (url, _):
        count = fetch_predictions([("part0.jsonl.gz", md5(first)), ("sub/part1.jsonl.gz", None)],
                                  tmp_path / "downloads", tmp_path / "predictions.jsonl", base_url=url, progress=False)
    assert count == 3
    # Normalised: string ids, one compact record per line, text kept as UTF-8.
    assert (tmp_path / "predictions.jsonl").read_text(encoding="utf-8") == jsonl(
        [("0", ["a b", "c"]), ("1", ["d\u00e9j\u00e0 vu"]), ("2", [])], ensure_ascii=False)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["part0.jsonl.gz", "part1.jsonl.gz"]


def test_corrupt_part_is_refused_by_checksum(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    good = gzip.compress(jsonl([("0", ["q"])]).encode())
    (www / "d2q.jsonl.gz").write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    with serve(www) as (url, _), pytest.raises(ChecksumError, match="md5 mismatch"):
        fetch_predictions([("d2q.jsonl.gz", md5(good))], tmp_path / "dl",
                          tmp_path / "predictions.jsonl", base_url=url, progress=False)
    assert not (tmp_path / "predictions.jsonl").exists()
    assert not list((tmp_path / "dl").iterdir())


def test_truncated_unverified_part_stops_with_the_file(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    whole = gzip.compress(jsonl([(str(i), ["some query"] * 20) for i in range(50)]).encode())
    (www / "d2q.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    with serve(www) as (url, _), pytest.raises(InputFormatError, match=r"d2q.jsonl.gz.*complete gzip stream"):
        fetch_predictions([("d2q.jsonl.gz", None)], tmp_path / "dl", tmp_path / "out.jsonl", base_url=url,
                          progress=False)
    assert not (tmp_path / "out.jsonl").exists()
