"""Resumable, checksum-verified downloads and single-member extraction from archives.

Bytes go to `<dest>.part` first; an interrupted download resumes from there with an HTTP Range
request, and only a complete file whose md5 matches is renamed to `dest`. Every failure names the
URL, and a network failure says how to work offline (fetch the file elsewhere, place it at dest).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3
from tqdm import tqdm

from pipeline.io import InputFormatError, atomic_output

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """The file could not be fetched (network failure or an HTTP error status)."""


class ChecksumError(ValueError):
    """A downloaded file's md5 differs from the published one."""


def _md5(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_hint(url: str, dest: Path, reason: object) -> DownloadError:
    return DownloadError(f"could not download {url}: {reason}. If this machine is offline, download it "
                         f"elsewhere and place it at {dest}")


def download(url: str, dest: Path, md5: str | None = None, *, progress: bool = True,
             chunk_size: int = 1 << 20, timeout: float = 60,
             headers: Mapping[str, str] | None = None) -> Path:
    """Fetch `url` to `dest` (resuming a previous `.part`), verify `md5` when given, and return `dest`.

    An existing `dest` whose md5 matches (or any existing `dest` when `md5` is None) is returned
    without touching the network. `headers` are sent with every request.
    """
    dest = Path(dest)
    if dest.is_file():
        if md5 is None:
            return dest
        actual = _md5(dest)
        if actual == md5:
            return dest
        log.warning("%s has md5 %s, expected %s; downloading it again", dest, actual, md5)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, dict(headers or {}), progress, chunk_size, timeout)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        raise _offline_hint(url, dest, err) from err  # the .part stays for the next attempt to resume
    if md5 is not None:
        actual = _md5(part)
        if actual != md5:
            part.unlink()
            raise ChecksumError(f"{url}: md5 mismatch, expected {md5}, got {actual} "
                                "(the downloaded file was deleted)")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, headers: dict[str, str], progress: bool, chunk_size: int,
           timeout: float) -> None:
    """Complete `part` from `url`, resuming from its current size when the server honours ranges."""
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
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise DownloadError(f"could not download {url}: asked for bytes from {offset}, the server sent "
                                f"{response.headers.get('Content-Range')!r}")
        start = offset if resumed else 0  # a 200 answer is the whole file: restart from zero
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[: -len(".part")], disable=not progress) as bar:
            for chunk in response.raw.stream(chunk_size, decode_content=False):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"could not download {url}: the connection ended after {size} of {total} bytes; "
                            "run again to resume")


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("/" + suffix)


@contextlib.contextmanager
def open_member(archive: Path, member_suffix: str) -> Iterator[BinaryIO]:
    """Stream the member of a .zip or .tar[.gz] archive named `member_suffix` or ending in `/member_suffix`.

    A zip with several such members is refused (it is cheap to list); a tar is read as a stream
    and its first such member is used.
    """
    archive, suffix = Path(archive), member_suffix.strip("/")
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                names = [n for n in zipped.namelist() if _matches(n, suffix) and not n.endswith("/")]
                if len(names) != 1:
                    listing = ", ".join(zipped.namelist()[:20])
                    raise InputFormatError(archive, None, f"exactly one member named .../{suffix}",
                                           f"{len(names)} such members; the archive has: {listing}")
                with zipped.open(names[0]) as stream:
                    yield stream
            return
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                if member.isfile() and _matches(member.name, suffix):
                    yield tar.extractfile(member)
                    return
        raise InputFormatError(archive, None, f"a member named .../{suffix}", "no such member in the archive")
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputFormatError(archive, None, "a complete, readable archive", str(err)) from err


def extract_member(archive: Path, member_suffix: str, dest: Path) -> Path:
    """Copy one archive member (see `open_member`) to `dest` atomically; returns `dest`."""
    with open_member(archive, member_suffix) as stream, atomic_output(dest, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    return Path(dest)
