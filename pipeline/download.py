"""Resumable, verified downloads (zip, gzip, bzip2 and xz files checked, members extracted: pipeline.archives).

Bytes go to `<dest>.part` first; an interrupted download resumes from there with an HTTP Range
request, and only a complete, verified file is renamed to `dest`. Complete means as long as the
response's Content-Length (or a resumed answer's Content-Range) announced. Verified means:

- with a published md5: the md5 matches (a file already at `dest` is checked the same way);
- without one: trust on first use. The first download's size and sha256 are recorded in a lock
  file, `checksums.tsv` (by default beside `dest`; the pipeline keeps one in its download
  directory), and every later use, of a file already in place or of a new download, must match
  them. A file in place that differs is deleted and fetched again; a download that differs is an
  error (delete the file's line if the publisher changed it). Before its first record a gzip, bzip2
  or xz file is decompressed to its end (trailer checked) and a zip has every member's CRC checked,
  so a transfer cut short without a Content-Length is refused, not recorded. A file placed at
  `dest` by hand before any record is checked the same way and then recorded.

Every failure names the URL, and a network failure says how to work offline (fetch the file
elsewhere, place it at dest).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from pipeline.archives import compressed_integrity
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, iter_lines
from pipeline.shards import file_checksum

log = logging.getLogger(__name__)

CHECKSUMS = "checksums.tsv"
CHECKSUMS_HEADER = ("name", "size", "sha256", "url")


class DownloadError(RuntimeError):
    """The file could not be fetched (network failure, an HTTP error status, or an incomplete response)."""


class ChecksumError(ValueError):
    """A downloaded file differs from its published md5 or from the size and sha256 recorded on first use."""


class CorruptArchiveError(InputFormatError):
    """A downloaded (or placed) gzip, bzip2, xz or zip file fails its own integrity check."""


def _md5(path: Path) -> str:
    return file_checksum(path, hashlib.md5())


def _sha256(path: Path) -> str:
    return file_checksum(path, hashlib.sha256())


def _offline_hint(url: str, dest: Path, reason: object) -> DownloadError:
    return DownloadError(f"could not download {url}: {reason}. If this machine is offline, download it "
                         f"elsewhere and place it at {dest}")


# -- the first-use lock file ------------------------------------------------------------------------

@dataclass(frozen=True)
class Recorded:
    """One line of a checksums file: the size and sha256 of a file's first download, and its URL then."""

    size: int
    sha256: str
    url: str
    line: int = 0


def read_checksums(path: Path) -> dict[str, Recorded]:
    """name -> Recorded of a checksums file (empty when it does not exist); bad lines stop with file and line."""
    path = Path(path)
    if not path.is_file():
        return {}
    recorded: dict[str, Recorded] = {}
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if not line.strip() or line.startswith("#") or (number == 1 and tuple(fields) == CHECKSUMS_HEADER):
            continue
        if (len(fields) != 4 or not fields[0] or not fields[1].isdigit()
                or not re.fullmatch(r"[0-9a-f]{64}", fields[2])):
            raise InputFormatError(path, number, "'name<TAB>size<TAB>sha256<TAB>url' (size in bytes, sha256 as 64 "
                                   "lower-case hex digits)", line)
        if fields[0] in recorded:
            raise InputFormatError(path, number, f"one line per name; {fields[0]} is on line "
                                   f"{recorded[fields[0]].line} too")
        recorded[fields[0]] = Recorded(int(fields[1]), fields[2], fields[3], number)
    return recorded


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`'s hidden `.lock` sibling: parallel downloads share one checksums file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record_first(path: Path, name: str, size: int, sha256: str, url: str) -> Recorded | None:
    """Add `name`'s line unless one is there already (another process's, since it was read); returns that one.

    The file is rewritten atomically, sorted by name, under a lock: parallel downloads share it.
    """
    with _locked(path):
        recorded = read_checksums(path)
        if name in recorded:
            return recorded[name]
        recorded[name] = Recorded(size, sha256, url)
        with atomic_output(path) as out:
            out.write("\t".join(CHECKSUMS_HEADER) + "\n")
            for key in sorted(recorded):
                entry = recorded[key]
                out.write(f"{key}\t{entry.size}\t{entry.sha256}\t{entry.url}\n")
    return None


def _name_in(checksums: Path, dest: Path) -> str:
    """`dest` relative to the checksums file's folder (posix), or its absolute path when outside it."""
    absolute, folder = Path(os.path.abspath(dest)), Path(os.path.abspath(checksums.parent))  # lexical: links kept
    try:
        name = absolute.relative_to(folder).as_posix()
    except ValueError:
        name = absolute.as_posix()
    if re.search(r"[\t\r\n]", name):
        raise ValueError(f"{dest}: a downloaded file's name cannot hold tabs or line breaks")
    return name


def _mismatch(path: Path, entry: Recorded) -> str | None:
    """How `path` differs from `entry` ('size X' / 'sha256 Y'), or None when it matches."""
    size = path.stat().st_size
    if size != entry.size:
        return f"size {size}"
    actual = _sha256(path)
    return None if actual == entry.sha256 else f"sha256 {actual}"


# -- download ---------------------------------------------------------------------------------------

def download(url: str, dest: Path, md5: str | None = None, *, progress: bool = True,
             chunk_size: int = 1 << 20, timeout: float = 60,
             headers: Mapping[str, str] | None = None, checksums: Path | None = None) -> Path:
    """Fetch `url` to `dest` (resuming a previous `.part`), verify it, and return `dest`.

    With `md5`, the file must match it. Without, it must match its line in the lock file `checksums`
    (default: `checksums.tsv` beside `dest`), which the first verified download writes (see the
    module docstring). An existing `dest` that passes is returned without touching the network; one
    that fails is fetched again. `headers` are sent with every request.
    """
    dest = Path(dest)
    if md5 is not None:
        return _download_md5(url, dest, md5, headers, progress, chunk_size, timeout)
    checksums = Path(checksums) if checksums is not None else dest.parent / CHECKSUMS
    name = _name_in(checksums, dest)
    entry = read_checksums(checksums).get(name)
    where = f"{checksums}, line {entry.line}" if entry else ""
    if dest.is_file():
        if entry is not None:
            differs = _mismatch(dest, entry)
            if differs is None:
                return dest
            log.warning("%s has %s, not the size %d and sha256 %s recorded on first use in %s; deleting it and "
                        "downloading it again", dest, differs, entry.size, entry.sha256, where)
            dest.unlink()
        else:
            kind, expected, problem = compressed_integrity(dest, dest.name)
            if problem:
                log.warning("%s was already in place with no checksum recorded, and is not %s (%s); deleting it "
                            "and downloading it again", dest, expected, problem)
                dest.unlink()
            else:
                log.warning("%s was already in place with no checksum recorded (%s); its size and sha256 are "
                            "recorded in %s and checked from now on", dest,
                            f"it passed the {kind} integrity check" if kind else "not a compressed file: unchecked",
                            checksums)
                _first_use(checksums, name, dest, url)
                return dest
    part = _fetch_part(url, dest, headers, progress, chunk_size, timeout)
    if entry is not None:
        differs = _mismatch(part, entry)
        if differs is not None:
            part.unlink()
            raise ChecksumError(f"{url}: sha256 mismatch, the download has {differs}; {where} recorded size "
                                f"{entry.size} and sha256 {entry.sha256} when it was first downloaded (the download "
                                "was deleted). If the publisher has changed the file, delete that line and run again")
    else:
        kind, expected, problem = compressed_integrity(part, dest.name)
        if problem:
            part.unlink()
            raise CorruptArchiveError(dest, None, f"{expected}; the download from {url} is truncated or corrupt "
                                      "(no checksum is published for it) and was deleted: run again", problem)
        try:
            _first_use(checksums, name, part, url)
        except ChecksumError:
            part.unlink()
            raise
        log.info("%s: no published checksum; its size and sha256 are recorded in %s (first use%s)", dest,
                 checksums, f", {kind} integrity checked" if kind else "")
    os.replace(part, dest)
    return dest


def _first_use(checksums: Path, name: str, path: Path, url: str) -> None:
    """Record `path`'s size and sha256 as `name`, or check them against a line written meanwhile."""
    size, sha256 = path.stat().st_size, _sha256(path)
    other = _record_first(checksums, name, size, sha256, url)
    if other is not None and (other.size, other.sha256) != (size, sha256):
        raise ChecksumError(f"{url}: sha256 mismatch, {path} has size {size} and sha256 {sha256}, but {checksums}, "
                            f"line {other.line} was written meanwhile with size {other.size} and sha256 "
                            f"{other.sha256}; run again")


def _download_md5(url: str, dest: Path, md5: str, headers: Mapping[str, str] | None, progress: bool,
                  chunk_size: int, timeout: float) -> Path:
    if dest.is_file():
        actual = _md5(dest)
        if actual == md5:
            return dest
        log.warning("%s has md5 %s, expected %s; downloading it again", dest, actual, md5)
    part = _fetch_part(url, dest, headers, progress, chunk_size, timeout)
    actual = _md5(part)
    if actual != md5:
        part.unlink()
        raise ChecksumError(f"{url}: md5 mismatch, expected {md5}, got {actual} "
                            "(the downloaded file was deleted)")
    os.replace(part, dest)
    return dest


def _fetch_part(url: str, dest: Path, headers: Mapping[str, str] | None, progress: bool, chunk_size: int,
                timeout: float) -> Path:
    """Complete `<dest>.part` from `url`; returns its path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, dict(headers or {}), progress, chunk_size, timeout)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        raise _offline_hint(url, dest, err) from err  # the .part stays for the next attempt to resume
    return part


def _fetch(url: str, part: Path, headers: dict[str, str], progress: bool, chunk_size: int,
           timeout: float) -> None:
    """Complete `part` from `url`, resuming from its current size when the server honours ranges.

    The result must be as long as announced: a 200 answer's Content-Length, or a 206 answer's
    Content-Range, which must start at the size of `part`, run to the end of the file and agree with
    its Content-Length. A short transfer keeps `part` (the next run resumes it); a long one deletes it.
    """
    offset = part.stat().st_size if part.is_file() else 0
    # Ask for the bytes as stored: a transparently gunzipped .gz would not match its checksum.
    headers["Accept-Encoding"] = "identity"
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
        if response.status_code == 416 and offset:
            # Nothing left past `offset`: the .part is complete (a crash before the rename) unless the
            # remote file is now shorter, in which case the .part is stale and we start over.
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total == str(offset):
                return
            part.unlink()
            headers.pop("Range")
            return _fetch(url, part, headers, progress, chunk_size, timeout)
        if response.status_code not in (200, 206):
            raise DownloadError(f"could not download {url}: the server answered HTTP {response.status_code} "
                                f"{response.reason}")
        resumed = response.status_code == 206
        start, total = _extent(url, part, response, offset if resumed else None)
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[: -len(".part")], disable=not progress) as bar:
            for chunk in response.raw.stream(chunk_size, decode_content=False):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise DownloadError(f"could not download {url}: the connection ended after {size} of {total} bytes; "
                            "run again to resume")
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(f"could not download {url}: the server sent {size} bytes, more than the {total} it "
                            "announced (the download was deleted)")


def _extent(url: str, part: Path, response: requests.Response, offset: int | None) -> tuple[int, int | None]:
    """(first byte, total size or None if unknown) of an answer; `offset` is where a 206 must start."""
    length = response.headers.get("Content-Length")
    if length is not None and not length.strip().isdigit():
        raise DownloadError(f"could not download {url}: the server sent Content-Length {length!r}")
    if offset is None:  # a 200 answer is the whole file: restart from zero
        return 0, None if length is None else int(length)
    content_range = response.headers.get("Content-Range", "")
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
    if match is None or int(match[1]) != offset:
        raise DownloadError(f"could not download {url}: asked for bytes from {offset}, the server sent "
                            f"{content_range or None!r}")
    last = int(match[2])
    # An open-ended request is answered to the end of the file, and the length is that of the range.
    if (match[3] != "*" and last + 1 != int(match[3])) or (length is not None and int(length) != last + 1 - offset):
        raise DownloadError(f"could not download {url}: the answer to a request for bytes from {offset} is "
                            f"inconsistent (Content-Range {content_range!r}, Content-Length {length}); "
                            f"delete {part} to start over")
    return offset, last + 1
