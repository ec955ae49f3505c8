"""Shared file formats: MS MARCO TSVs, TREC qrels and runs, and atomic writes.

Every reader decodes strictly (UTF-8) and checks the shape of each line, so a bad input stops
with the file, the line number and what was expected instead of a stack trace far downstream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temporary sibling of `path` for writing; rename it over `path` only on success.

    A crash or a validation error leaves the previous file (or no file) in place, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; outputs get the usual permissions
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed run (SIGKILL skips the clean-up)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run (`qid Q0 docid rank score tag`) into {qid: {docid: score}}."""
    run: Run = {}
    for number, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputFormatError(path, number, "6 fields 'qid Q0 docid rank score tag'", line)
        try:
            score = float(fields[4])
        except ValueError:
            raise InputFormatError(path, number, "a numeric score in the 5th field", line) from None
        hits = run.setdefault(fields[0], {})
        if fields[2] in hits:
            raise InputFormatError(path, number, f"each docid once per query; {fields[2]} repeated")
        hits[fields[2]] = score
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

EMBEDDINGS_FILE, IDS_FILE, MANIFEST_FILE = "emb.npy", "ids.parquet", "manifest.json"


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


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise InputFormatError(path, None, "a manifest.json written by this pipeline (incomplete or foreign dir?)")
    return json.loads(path.read_text())


def open_shard(directory: str | os.PathLike, expect: Mapping[str, object] | None = None,
               ids_as_lines: bool = False) -> tuple:
    """Memory-map a shard's embeddings and read its ids, checking them against the manifest.

    `expect` holds manifest fields that must match (model, dims, dtype, pooling); a mismatch or a
    shard whose row count, dtype or id checksum disagrees with its manifest is refused. With
    `ids_as_lines` the ids come as one bytes object of UTF-8 `id\\n` lines (pyserini's docid layout):
    about 8 bytes a pid where a list of str takes some 64, for build_index, which only hashes and
    writes them.
    """
    import numpy as np

    directory = Path(directory)
    manifest = read_manifest(directory)
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise InputFormatError(directory / MANIFEST_FILE, None, f"{key} = {value!r}", repr(manifest.get(key)))
    embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r")
    ids = read_ids(directory / IDS_FILE)
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
