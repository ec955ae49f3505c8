"""Embedding shards: a NumPy array, its ids and a manifest, each array file checksummed."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.formats import InputFormatError

# Embedding shards: `emb.npy` (rows x dims, float16/float32, memory-mappable), `ids.parquet` (one
# string column `id`, same order) and `manifest.json` describing both. Dense indexes keep the
# same manifest, so an index built from one model cannot be searched with another's queries.
#
# The manifest's `files` maps each array file of the shard (`emb.npy`; a token shard's `tokens.npy` and
# `offsets.npy`) to its size in bytes, shape, dtype and blake2b checksum (`npy_record`, computed once the file
# is written, before the shard directory is renamed into place). Verification policy (`verify_npy`):
# - size, shape and dtype are checked on every open: a stat and the .npy header, free;
# - the checksum (blake2b over the whole file) is checked by every reader too, except build_index, which
#   hashes each shard while streaming it into the index (it reads every byte anyway; the hashing overlaps
#   the copy in a second thread, so it adds ~15% to the streaming, not ~70%) and refuses a mismatch before
#   anything is written. blake2b ran at 1.2 GB/s on one core of the 2-core AMD EPYC this was written
#   on (1.1 GB/s with the other core busy; sha256 1.8 GB/s there thanks to SHA extensions, which not every
#   CPU has, md5 0.8 GB/s), so a 1.7 GB MS MARCO float16 shard (8.8M x 768 / 8) costs about 1.5 s, about
#   12 s for the whole collection, against hours of encoding: encode_corpus verifies an existing shard in
#   full before keeping it.
# A shard whose manifest has no `files` record (written before the records existed) is refused by readers
# and re-encoded by encode_corpus.

EMBEDDINGS_FILE, IDS_FILE, MANIFEST_FILE = "emb.npy", "ids.parquet", "manifest.json"
CHECKSUM = "blake2b"  # the key of the checksum in a file record
_HASH_BLOCK = 1 << 24


def new_checksum() -> hashlib.blake2b:
    """The running checksum of npy_record (update it with the file's bytes, in order, from the first)."""
    return hashlib.blake2b(digest_size=32)


def file_checksum(path: str | os.PathLike, digest: hashlib._Hash | None = None) -> str:
    """The hex digest of a file's bytes (new_checksum's blake2b unless another hashlib object is given, e.g.
    md5 for a publisher's checksum), read in 16 MB blocks into one buffer."""
    digest, buffer = digest or new_checksum(), bytearray(_HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], object, bool, int]:
    """(shape, dtype, fortran order, offset of the data) from a .npy file's header; an unreadable one is
    refused naming the file."""
    import numpy as np

    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise ValueError(f"format version {version}")
            shape, fortran_order, dtype = readers[version](handle)
            return shape, dtype, fortran_order, handle.tell()
    except FileNotFoundError:
        raise InputFormatError(path, None, "a .npy file", "no such file") from None
    except (ValueError, OSError, SyntaxError) as err:
        raise InputFormatError(path, None, "a .npy array file (version 1.0 or 2.0)", str(err)) from None


def npy_record(path: str | os.PathLike) -> dict:
    """A manifest's record of an array file: its size, shape, dtype and checksum."""
    shape, dtype, _, _ = npy_header(path)
    return {"bytes": os.path.getsize(path), "shape": list(shape), "dtype": str(dtype), CHECKSUM: file_checksum(path)}


def files_record(directory: str | os.PathLike, names: Iterable[str]) -> dict[str, dict]:
    """The manifest's `files`: npy_record of each named file of a shard directory."""
    return {name: npy_record(Path(directory) / name) for name in names}


def checksum_mismatch(path: str | os.PathLike) -> InputFormatError:
    """The error for an array file whose bytes do not hash to its record's checksum."""
    return InputFormatError(path, None, f"the {CHECKSUM} checksum its shard's manifest records",
                            "other bytes at the recorded size and shape: a damaged file")


def verify_npy(path: str | os.PathLike, record: Mapping | None, checksum: bool = True) -> None:
    """Refuse, naming the file, an array file whose size, shape or dtype differ from `record` (the manifest's
    entry for it), or, with `checksum`, whose bytes do not hash to its checksum. No record is refused too:
    the shard was written before manifests recorded their files (encode it again)."""
    path = Path(path)
    if not isinstance(record, Mapping) or not {"bytes", "shape", "dtype", CHECKSUM} <= record.keys():
        raise InputFormatError(path, None, "its size, shape and checksum in the shard's manifest",
                               "none (written before manifests recorded them): delete the shard, encode it again")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputFormatError(path, None, "the file its shard's manifest records", "no such file") from None
    recorded = f"{record['bytes']} bytes holding shape {record['shape']} {record['dtype']}"
    if size != record["bytes"]:
        raise InputFormatError(path, None, f"{recorded}, as its shard's manifest records",
                               f"{size} bytes: a truncated or overwritten file")
    shape, dtype, fortran_order, offset = npy_header(path)
    if list(shape) != list(record["shape"]) or str(dtype) != record["dtype"] or fortran_order:
        raise InputFormatError(path, None, f"{recorded}, as its shard's manifest records",
                               f"shape {list(shape)} {dtype}{' (Fortran order)' if fortran_order else ''}")
    data = math.prod(shape) * dtype.itemsize
    if offset + data != size:
        raise InputFormatError(path, None, f"{offset + data} bytes for shape {list(shape)} {dtype}", f"{size} bytes")
    if checksum and file_checksum(path) != record[CHECKSUM]:
        raise checksum_mismatch(path)


def ids_checksum(ids: Sequence[str]) -> str:
    return lines_checksum(ident.encode("utf-8") + b"\n" for ident in ids)


def lines_checksum(blocks: Iterable[bytes]) -> str:
    """ids_checksum of ids given as blocks of UTF-8 `id\\n` lines (the same bytes hashed: the same value)."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()[:32]


def write_ids(path: str | os.PathLike, ids: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": pa.array(list(ids), type=pa.string())}), str(path))


def read_ids(path: str | os.PathLike) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # ParquetFile rather than read_table, whose dataset machinery alone keeps ~50 MB resident; the pool then
    # hands back the pages of the table read (mimalloc would keep ~20 MB).
    ids = pq.ParquetFile(str(path)).read(columns=["id"], use_threads=False).column("id").to_pylist()
    pa.default_memory_pool().release_unused()
    return ids


def read_shard_ids(path: str | os.PathLike) -> list[str]:
    """read_ids, a missing or unreadable file refused naming it (the ids' content is checked against the
    manifest's ids_checksum by the caller)."""
    import pyarrow as pa

    try:
        return read_ids(path)
    except (OSError, pa.ArrowException, KeyError) as err:
        raise InputFormatError(path, None, "a Parquet file with a string column 'id'", str(err)) from None


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise InputFormatError(path, None, "a manifest.json written by this pipeline (incomplete or foreign dir?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputFormatError(path, None, "a JSON manifest", str(err)) from None
    if not isinstance(manifest, dict):
        raise InputFormatError(path, None, "a JSON object", type(manifest).__name__)
    return manifest


def open_shard(directory: str | os.PathLike, expect: Mapping[str, object] | None = None,
               ids_as_lines: bool = False, checksum: bool = True) -> tuple:
    """Memory-map a shard's embeddings and read its ids, checking them against the manifest.

    `expect` holds manifest fields that must match (model, dims, dtype, pooling); a mismatch or a
    shard whose row count, dtype or id checksum disagrees with its manifest is refused, and so is an
    `emb.npy` whose size, shape, dtype or (unless `checksum` is false) blake2b checksum differs from the
    manifest's record of it (verify_npy; the error names the file). build_index passes `checksum=False`
    and hashes the file as it streams it. With `ids_as_lines` the ids come as one bytes object of
    UTF-8 `id\\n` lines (pyserini's docid layout): about 8 bytes a pid where a list of str takes some 64,
    for build_index, which only hashes and writes them.
    """
    import numpy as np

    directory = Path(directory)
    manifest = read_manifest(directory)
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise InputFormatError(directory / MANIFEST_FILE, None, f"{key} = {value!r}", repr(manifest.get(key)))
    verify_npy(directory / EMBEDDINGS_FILE, (manifest.get("files") or {}).get(EMBEDDINGS_FILE), checksum)
    embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r")
    ids = read_shard_ids(directory / IDS_FILE)
    count = len(ids)
    if ids_as_lines:
        ids = "".join(f"{ident}\n" for ident in ids).encode("utf-8")
    problems = []
    if embeddings.shape[0] != manifest["count"] or count != manifest["count"]:
        problems.append(f"{embeddings.shape[0]} vectors and {count} ids, manifest says {manifest['count']}")
    if str(embeddings.dtype) != manifest["dtype"]:
        problems.append(f"dtype {embeddings.dtype}, manifest says {manifest['dtype']}")
    if embeddings.ndim != 2 or embeddings.shape[1] != manifest["dims"]:
        problems.append(f"shape {embeddings.shape}, manifest says {manifest['dims']} dims")
    if (lines_checksum([ids]) if ids_as_lines else ids_checksum(ids)) != manifest["ids_checksum"]:
        problems.append("ids do not match the manifest's checksum")
    if problems:
        raise InputFormatError(directory, None, "a consistent embedding shard", "; ".join(problems))
    return embeddings, ids, manifest
