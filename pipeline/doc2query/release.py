"""castorini/docTTTTTquery's original MS MARCO passage predictions, md5-verified, as predictions JSON lines.

`predicted_queries_topk_sampling.zip` (7.9 GB, md5 published in the docTTTTTquery README) holds 80
top-k samples x 18 chunks of plain text, `predicted_queries_topk_sample<SSS>.txt<CCC>-1004000`:
line j of chunk c is sample SSS's query for passage c * 1,000,000 + j of the collection. The
release has no ids: the pid written for a line is its passage index, which is the MS MARCO passage
pid (0..8841822, in collection order); `pipeline.doc2query.expand` checks that against the
collection (unknown pids and passages left without predictions stop with file and line).

Samples 000..n-1 are read side by side, chunk after chunk, so a record's queries joined by spaces
are the line the README's recipe gives (`paste -d" "` of samples 000-039 per chunk, then `cat` of
the chunks). Only the n samples asked for are read; the archive is streamed, never extracted.

    python -m pipeline.doc2query.release --download-dir resources/downloads/doc2query --samples 40 \
        --out resources/msmarco-passage/doc2query/predictions.jsonl
"""

from __future__ import annotations

import argparse
import io
import itertools
import logging
import re
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.download import DownloadError, download
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, format_prediction

log = logging.getLogger(__name__)

ARCHIVE = "predicted_queries_topk_sampling.zip"
# Mirrors of one file, tried in order: the README's GCS link (storage.googleapis.com is the direct
# download form of its storage.cloud.google.com address) and its Dropbox link (dl=1: the file, not a page).
URLS = ("https://storage.googleapis.com/doctttttquery_git/predicted_queries_topk_sampling.zip",
        "https://www.dropbox.com/s/uzkvv4gpj3a596a/predicted_queries_topk_sampling.zip?dl=1")
MD5 = "8bb33ac317e76385d5047322db9b9c34"
MEMBER = re.compile(r"predicted_queries_topk_sample(\d{3})\.txt(\d{3})-1004000")


def member_name(sample: int, chunk: int) -> str:
    return f"predicted_queries_topk_sample{sample:03d}.txt{chunk:03d}-1004000"


def _open_archive(archive: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise InputFormatError(archive, None, "a complete zip archive (a truncated download?)", str(err)) from None


def _members(archive: Path, zipped: zipfile.ZipFile) -> dict[tuple[int, int], str]:
    """(sample, chunk) -> member name; members are matched by file name, whatever folder holds them."""
    found: dict[tuple[int, int], str] = {}
    for name in zipped.namelist():
        match = MEMBER.fullmatch(name.rpartition("/")[2])
        if match is None:
            continue
        key = (int(match[1]), int(match[2]))
        if key in found:
            raise InputFormatError(archive, None, f"one member named {member_name(*key)}", f"{found[key]} and {name}")
        found[key] = name
    if not found:
        listing = ", ".join(zipped.namelist()[:10])
        raise InputFormatError(archive, None, f"members named like {member_name(0, 0)}", f"the archive has: {listing}")
    return found


def _lines(archive: Path, zipped: zipfile.ZipFile, name: str) -> Iterator[str]:
    """The lines of one member, without their newlines; errors name the member and the line."""
    where, number = f"{archive}:{name}", 0
    try:
        # A large buffer: the members are read side by side, and each refill seeks in the shared file.
        with zipped.open(name) as member, io.BufferedReader(member, 1 << 20) as stream:
            for number, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputFormatError(where, number, "UTF-8 text", f"invalid byte at column {err.start + 1}") \
                        from None
                yield line.removesuffix("\n")
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        # A bad CRC shows at the member's end and a broken deflate stream a buffer ahead: no line to blame.
        raise InputFormatError(where, None, "intact compressed data (a corrupt archive?)",
                               f"{err}, after line {number}") from None


def _rows(archive: Path, zipped: zipfile.ZipFile, names: Sequence[str]) -> Iterator[list[str]]:
    """Line j of every member in `names` (one chunk's samples), as long as all of them have one."""
    streams = [_lines(archive, zipped, name) for name in names]
    try:
        for number in itertools.count(1):
            row = [next(stream, None) for stream in streams]
            ended = [line is None for line in row]
            if all(ended):
                return
            if any(ended):
                short, long = names[ended.index(True)], names[ended.index(False)]
                raise InputFormatError(f"{archive}:{short}", number, f"a line {number}, as {long} has one "
                                       "(every sample of a chunk has one line per passage)", "the end of the member")
            yield row
    finally:
        for stream in streams:
            stream.close()


def _chunk_members(archive: Path, members: dict[tuple[int, int], str], chunk: int, samples: int) -> list[str]:
    held = 1 + max(sample for sample, _ in members)
    missing = [sample for sample in range(samples) if (sample, chunk) not in members]
    if missing:
        raise InputFormatError(archive, None, f"a member {member_name(missing[0], chunk)} (sample {missing[0]}, chunk "
                               f"{chunk}; the archive holds samples up to {held - 1:03d})", "no such member")
    return [members[sample, chunk] for sample in range(samples)]


def convert_release(archive: Path, out: Path, samples: int, progress: bool = True) -> int:
    """Write samples 0..`samples`-1 of the release `archive` to `out`, one predictions record per passage
    (pid = the passage's line index across the chunks, in order); returns the number of passages."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    archive = Path(archive)
    with _open_archive(archive) as zipped:
        members = _members(archive, zipped)
        pid = 0
        with atomic_output(out) as handle, tqdm(desc=archive.name, unit="passage", mininterval=5,
                                                disable=not progress) as bar:
            for chunk in range(1 + max(chunk for _, chunk in members)):
                for queries in _rows(archive, zipped, _chunk_members(archive, members, chunk, samples)):
                    handle.write(format_prediction(str(pid), queries))
                    pid += 1
                    bar.update()
    return pid


def download_release(download_dir: Path, urls: Sequence[str] = URLS, md5: str = MD5, progress: bool = True) -> Path:
    """Fetch the archive (resumable, md5-verified) from the first of `urls` that answers; returns its path."""
    dest, failures = Path(download_dir) / ARCHIVE, []
    for url in urls:
        try:
            # A .part left by one mirror is resumed from the next: they serve the same bytes, and the md5 vouches.
            return download(url, dest, md5, progress=progress)
        except DownloadError as err:
            log.warning("%s", err)
            failures.append(str(err))
    raise DownloadError("no mirror of the docTTTTTquery release answered: " + "; ".join(failures))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--download-dir", type=Path, required=True, help="where the archive is kept (and resumed)")
    parser.add_argument("--out", type=Path, required=True, help="predictions file to write (JSON lines)")
    parser.add_argument("--samples", type=int, default=40, help="queries per passage: samples 000..N-1 of the 80")
    parser.add_argument("--url", action="append", dest="urls",
                        help=f"a mirror, tried in order (repeatable; default: {', '.join(URLS)})")
    parser.add_argument("--md5", default=MD5, help="the archive's md5 (default: the published one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    archive = download_release(args.download_dir, args.urls or URLS, args.md5)
    count = convert_release(archive, args.out, args.samples)
    log.info("wrote %d queries for each of %d passages to %s", args.samples, count, args.out)


if __name__ == "__main__":
    run_stage(main)
