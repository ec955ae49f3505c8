"""Shared file formats: MS MARCO TSVs, TREC qrels and runs, embedding shards, and atomic writes.

Every reader decodes strictly (UTF-8) and checks the shape of each line, so a bad input stops
with the file, the line number and what was expected instead of a stack trace far downstream.

Final outputs are written atomically and durably: into a temporary sibling, fsynced (the file, or
every file and directory of a staged directory), renamed into place, and the parent directory
fsynced after the rename where the OS allows it, so that a crash or power loss leaves the old output
or the new one, never a renamed file whose blocks were not yet on disk. The cost, measured on ext4
(virtio disk, 2 cores): about 35 ms for a demo-sized shard directory (1.5 MB emb.npy) and a 7 MB run
written together (45 ms instead of 12 ms), so a few seconds over the demo's hundred or so outputs.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
_UMASK = os.umask(0o022)  # read once (the call sets it, so set it straight back)
os.umask(_UMASK)


class InputFormatError(ValueError):
    """A line of an input file is not what the format requires."""

    def __init__(self, path: str | os.PathLike, line: int | None, expected: str, got: str = ""):
        self.path, self.line, self.expected = str(path), line, expected
        where = f"{path}, line {line}" if line is not None else str(path)
        detail = f" (got: {got[:120]!r})" if got else ""
        super().__init__(f"{where}: expected {expected}{detail}")


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename into it, a file created in it) to disk, where the OS allows it:
    opening a directory for fsync is a POSIX feature (not on Windows), and some filesystems refuse it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every regular file under `root`, then every directory, deepest first (symlinks skipped).

    A file's fsync errors propagate (the data may not be on disk); a directory's are ignored where the OS
    does not support them. A file already flushed costs one system call, so files written with
    atomic_output inside a staged directory are cheap to flush again.
    """
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file_path = os.path.join(folder, name)
            if os.path.islink(file_path):
                continue
            fd = os.open(file_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(folder)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary sibling of `path` for writing; rename it over `path` only on success.

    A crash or a validation error leaves the previous file (or no file) in place, never half of one.
    The file is fsynced before the rename and its directory after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; outputs get the usual permissions
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _siblings(path: Path, suffix: str) -> list[Path]:
    """`.<name>.<random>.<suffix>` siblings of `path`, the random part without dots: the staging and aside
    copies of `path` itself, not of a sibling output whose name extends it (`bm25` and `bm25.d2q`)."""
    prefix = f".{path.name}."
    return [sibling for sibling in path.parent.glob(f"{glob.escape(prefix)}*{suffix}")
            if "." not in sibling.name[len(prefix):-len(suffix)]]


def remove_stale_staging(path: str | os.PathLike) -> None:
    """Remove the `.<name>.<random>.tmp` staging files and directories a killed writer of `path` left (SIGKILL
    skips every clean-up); called as a writer of `path` starts, when no other writer of it runs."""
    for stale in _siblings(Path(path), ".tmp"):
        _remove(stale)


def _recover_aside(path: Path) -> None:
    """Clean up after a killed atomic_directory: staging directories go; an old output renamed aside goes
    too, unless the kill came between the two renames (no output in place), when it is renamed back."""
    remove_stale_staging(path)
    asides = sorted(_siblings(path, ".old"), key=lambda aside: aside.stat().st_mtime_ns)
    if asides and not path.exists() and not path.is_symlink():
        os.replace(asides.pop(), path)
    for aside in asides:
        _remove(aside)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `path` when the block succeeds.

    On success every file and directory in the staging directory is fsynced, the old output (if any) is
    renamed aside (`.<name>.<random>.old`), the new one renamed in, the parent directory fsynced, and only
    then the old output removed. If the second rename fails the old output is renamed back; if the process
    is killed between the two renames, the next atomic_directory for `path` renames it back before starting.
    So at every moment the old output or the new one is in place (or recoverable next to it), never neither.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover_aside(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    aside = None
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists() or path.is_symlink():
            aside = path.parent / f".{path.name}.{secrets.token_hex(6)}.old"
            os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            if aside is not None:
                os.replace(aside, path)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)
    if aside is not None:
        _remove(aside)


def _decode(path: str | os.PathLike, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise InputFormatError(path, number, "UTF-8 text", f"invalid byte at column {err.start + 1}") from None


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (line number, line without its newline), decoding each line as strict UTF-8."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, _decode(path, number, raw)


def _id_text(path: str | os.PathLike, number: int, line: str, what: str, seen: set[str],
             allow_empty: bool = False) -> tuple[str, str]:
    """One `id<TAB>text` line checked: non-empty id and text (unless `allow_empty`), the id not in `seen`
    (then added)."""
    ident, tab, text = line.partition("\t")
    ident, text = ident.strip(), text.strip()
    if not tab or not ident:
        raise InputFormatError(path, number, f"'{what}<TAB>text'", line)
    if not text and not allow_empty:
        raise InputFormatError(path, number, f"non-empty text for {what} {ident}")
    if ident in seen:
        raise InputFormatError(path, number, f"a unique {what}; {ident} appeared before")
    seen.add(ident)
    return ident, text


def iter_id_text(path: str | os.PathLike, what: str, allow_empty: bool = False) -> Iterator[tuple[int, str, str]]:
    """Yield (line, id, text) from an `id<TAB>text` file, refusing empty ids, repeats and (unless `allow_empty`)
    empty text."""
    seen: set[str] = set()
    for number, line in iter_lines(path):
        yield number, *_id_text(path, number, line, what, seen, allow_empty)


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    """Read `qid<TAB>text` into an ordered dict."""
    return {qid: text for _, qid, text in iter_id_text(path, "qid")}


def read_collection(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Stream `pid<TAB>text` pairs from a collection (never held in memory as a whole)."""
    for _, pid, text in iter_id_text(path, "pid"):
        yield pid, text


def count_lines(path: str | os.PathLike) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))


def read_collection_shard(path: str | os.PathLike, shard: int, shards: int) -> tuple[list[str], list[str]]:
    """Ids and texts of shard `shard` of `shards`: lines [i * N / n, (i + 1) * N / n), in order.

    The shards partition the collection in order whatever their number, so gathering them in
    shard order gives back the collection.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    total = count_lines(path)
    lo, hi = total * shard // shards, total * (shard + 1) // shards
    ids, texts, seen = [], [], set()
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number > hi:
                break
            if number > lo:  # earlier shards' lines are skipped undecoded: prepare_data checked them
                pid, text = _id_text(path, number, _decode(path, number, raw), "pid", seen)
                ids.append(pid)
                texts.append(text)
    return ids, texts


def clean_text(text: str) -> str:
    """Tabs and newlines would break the one-record-per-line TSV formats; fold them to spaces."""
    return " ".join(text.split())


def write_id_text(path: str | os.PathLike, records: Iterable[tuple[str, str]]) -> int:
    """Write `id<TAB>text` lines atomically; returns the number written."""
    count = 0
    with atomic_output(path) as out:
        for ident, text in records:
            out.write(f"{ident}\t{clean_text(text)}\n")
            count += 1
    return count


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (`qid iter docid rel`, whitespace separated)."""
    qrels: Qrels = {}
    for number, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise InputFormatError(path, number, "4 fields 'qid iter docid relevance'", line)
        try:
            rel = int(fields[3])
        except ValueError:
            raise InputFormatError(path, number, "an integer relevance in the 4th field", line) from None
        judged = qrels.setdefault(fields[0], {})
        if fields[2] in judged and judged[fields[2]] != rel:
            raise InputFormatError(path, number, f"one judgement per (qid, docid); {fields[2]} judged twice")
        judged[fields[2]] = rel
    return qrels


def write_qrels(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, int]]) -> None:
    with atomic_output(path) as out:
        for qid, judged in qrels.items():
            for docid, rel in judged.items():
                out.write(f"{qid} 0 {docid} {rel}\n")


def run_line(path: str | os.PathLike, number: int, line: str) -> tuple[str, str, float] | None:
    """(qid, docid, score) of one TREC run line, None for a blank line; a line with other than six fields, or
    a score that is not a finite number (NaN and inf would rank arbitrarily), is refused with file and line."""
    fields = line.split()
    if not fields:
        return None
    if len(fields) != 6:
        raise InputFormatError(path, number, "6 fields 'qid Q0 docid rank score tag'", line)
    try:
        score = float(fields[4])
    except ValueError:
        raise InputFormatError(path, number, "a numeric score in the 5th field", line) from None
    if not math.isfinite(score):
        raise InputFormatError(path, number, "a finite score in the 5th field (not NaN or inf)", line)
    return fields[0], fields[2], score


def check_run_lines(path: str | os.PathLike) -> None:
    """Read a run line by line and raise the error of its first bad line (none: return): for fast readers
    that notice that something is wrong with a run but not on which line."""
    for number, line in iter_lines(path):
        run_line(path, number, line)


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`) into {qid: {docid: score}}; scores must be finite."""
    run: Run = {}
    for number, line in iter_lines(path):
        parsed = run_line(path, number, line)
        if parsed is None:
            continue
        qid, docid, score = parsed
        hits = run.setdefault(qid, {})
        if docid in hits:
            raise InputFormatError(path, number, f"each docid once per query; {docid} repeated")
        hits[docid] = score
    return run


def write_run(path: str | os.PathLike, ranked: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> None:
    """Write {qid: [(docid, score), ...]} (already in rank order) as a TREC run, atomically."""
    with atomic_output(path) as out:
        for qid, hits in ranked.items():
            for rank, (docid, score) in enumerate(hits, start=1):
                out.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def read_triples(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Read id triples `qid<TAB>positive pid<TAB>negative pid`."""
    triples = []
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if len(fields) != 3 or not all(fields):
            raise InputFormatError(path, number, "'qid<TAB>positive pid<TAB>negative pid'", line)
        triples.append((fields[0], fields[1], fields[2]))
    return triples


def write_triples(path: str | os.PathLike, triples: Iterable[tuple[str, str, str]]) -> int:
    count = 0
    with atomic_output(path) as out:
        for qid, pos, neg in triples:
            out.write(f"{qid}\t{pos}\t{neg}\n")
            count += 1
    return count


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
