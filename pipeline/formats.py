"""The text formats: MS MARCO TSVs (queries, collection), TREC qrels and runs, id triples, Margin-MSE teacher
scores, and docTTTTTquery predictions (JSON lines, plain or gzipped).

Every reader decodes strictly (UTF-8) and checks the shape of each line, so a bad input stops
with the file, the line number and what was expected instead of a stack trace far downstream.
Writers go through pipeline.durable.atomic_output.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

from pipeline.durable import atomic_output

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


class InputFormatError(ValueError):
    """A line of an input file is not what the format requires."""

    def __init__(self, path: str | os.PathLike, line: int | None, expected: str, got: str = ""):
        self.path, self.line, self.expected = str(path), line, expected
        where = f"{path}, line {line}" if line is not None else str(path)
        detail = f" (got: {got[:120]!r})" if got else ""
        super().__init__(f"{where}: expected {expected}{detail}")


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


def iter_teacher_scores(path: str | os.PathLike) -> Iterator[tuple[tuple[str, str, str], tuple[float, float]]]:
    """((qid, positive pid, negative pid), (positive score, negative score)) of each line of a Margin-MSE score file
    in its authors' format, `pos_score neg_score qid pos_pid neg_pid`; streams, never loads the file."""
    for number, line in iter_lines(path):
        fields = line.split()
        try:
            if len(fields) != 5:
                raise ValueError
            pair = float(fields[0]), float(fields[1])
        except ValueError:
            raise InputFormatError(path, number, "'pos_score neg_score qid pos_pid neg_pid' with numeric scores",
                                   line) from None
        yield (fields[2], fields[3], fields[4]), pair


def read_teacher_scores(path: str | os.PathLike, wanted: set[tuple[str, str, str]] | None = None,
                        ) -> dict[tuple[str, str, str], tuple[float, float]]:
    """A Margin-MSE score file as {(qid, positive pid, negative pid): (positive score, negative score)}, of the
    `wanted` triples only if given: the authors' files score ~40M triples, more than a training run reads."""
    scores, empty = {}, True
    for triple, pair in iter_teacher_scores(path):
        empty = False
        if wanted is None or triple in wanted:
            scores[triple] = pair
    if empty:
        raise InputFormatError(path, None, "at least one scored triple")
    return scores

# docTTTTTquery predictions: one passage per line, `{"id": "<pid>", "predicted_queries": ["q1", "q2", ...]}`
# (castorini's release, and what pipeline.doc2query.generate writes).
EXPECTED = 'a JSON object with keys "id" (a non-empty string) and "predicted_queries" (a list of strings)'


def _open_predictions(path: str | os.PathLike) -> BinaryIO:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def _parse_prediction(path: str | os.PathLike, number: int, raw: bytes) -> tuple[str, list[str]]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputFormatError(path, number, "UTF-8 text", f"invalid byte at column {err.start + 1}") from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        if not raw.endswith(b"\n"):
            # A download or a generation run cut short ends in the middle of a record.
            raise InputFormatError(path, number, "a complete last line; it has no newline and is not valid JSON, "
                                   "so the file looks truncated", line) from None
        raise InputFormatError(path, number, EXPECTED, line.rstrip("\r\n")) from None
    pid = record.get("id") if isinstance(record, dict) else None
    queries = record.get("predicted_queries") if isinstance(record, dict) else None
    if isinstance(pid, int) and not isinstance(pid, bool):
        pid = str(pid)  # numeric ids written as numbers by other tools
    if (not isinstance(pid, str) or not pid.strip() or not isinstance(queries, list)
            or not all(isinstance(query, str) for query in queries)):
        raise InputFormatError(path, number, EXPECTED, line.rstrip("\r\n"))
    return pid.strip(), queries


def iter_predictions(path: str | os.PathLike) -> Iterator[tuple[int, str, list[str]]]:
    """Yield (line number, pid, predicted queries), checking every line; streams, never loads the file."""
    number = 0
    try:
        with _open_predictions(path) as handle:
            for number, raw in enumerate(handle, start=1):
                pid, queries = _parse_prediction(path, number, raw)
                yield number, pid, queries
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputFormatError(path, number + 1, "a complete gzip stream (a truncated download?)", str(err)) from None


def read_predictions(path: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
    """Yield (pid, predicted queries) in file order."""
    for _, pid, queries in iter_predictions(path):
        yield pid, queries


def format_prediction(pid: str, queries: Sequence[str]) -> str:
    """One line of the official format (with its newline)."""
    return json.dumps({"id": pid, "predicted_queries": list(queries)}, ensure_ascii=False) + "\n"
