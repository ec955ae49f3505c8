"""Compressed files and archives: whether a gzip, bzip2, xz or zip file is intact, and one member of a zip or
tar archive streamed or extracted."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError

_STREAMS = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}
_SUFFIXES = {".zip": "zip", ".gz": "gzip", ".tgz": "gzip", ".bz2": "bzip2", ".tbz2": "bzip2", ".xz": "xz",
             ".txz": "xz"}
_MAGIC = {b"PK\x03\x04": "zip", b"PK\x05\x06": "zip", b"\x1f\x8b": "gzip", b"BZh": "bzip2",
          b"\xfd7zXZ\x00": "xz"}


def _kind(path: Path, name: str) -> str | None:
    """'zip', 'gzip', 'bzip2', 'xz' (by the file name `name`, else by its first bytes), or None."""
    kind = _SUFFIXES.get(Path(name).suffix.lower())
    if kind is not None:
        return kind
    with open(path, "rb") as handle:
        head = handle.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def compressed_integrity(path: Path, name: str) -> tuple[str | None, str, str]:
    """(kind, what was expected, the problem) of a compressed file; the problem is '' when it is intact."""
    kind = _kind(path, name)
    if kind is None:
        return None, "", ""
    expected = f"a complete {kind} {'archive' if kind == 'zip' else 'stream'}"
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zipped:
                bad = zipped.testzip()
            return kind, expected, "" if bad is None else f"member {bad} fails its CRC check"
        with _STREAMS[kind](path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, NotImplementedError,
            ValueError) as err:  # gzip.BadGzipFile is an OSError
        return kind, expected, str(err) or type(err).__name__
    return kind, expected, ""


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
