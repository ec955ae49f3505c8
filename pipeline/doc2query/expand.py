"""Expand a collection with doc2query predictions: each passage followed by its first N predicted queries.

    python -m pipeline.doc2query.expand --collection resources/D/collection.tsv \
        --predictions resources/D/doc2query/predictions.jsonl --out resources/D/collection.d2q.tsv --n-queries 40

Output lines are `pid<TAB>text q1 q2 ... qN` in collection order (docTTTTTquery's MS MARCO passage
runs append 40 of the sampled queries; the official release holds 80 per passage). Several
`--predictions` files are read as one, in the order given: the shards of a generation run, in
shard order. Passages without predictions are kept as they are and counted, or are an error naming
the collection's line with `--missing error` (a release meant to cover the whole collection, such as
docTTTTTquery's, whose pids are passage indices); predictions for a pid the collection lacks are an
error naming their file and line, or skipped with `--unknown skip`.

Predictions in collection order (the official release, generated shards) are streamed beside the
collection, so neither is held in memory. Otherwise the predictions (capped at N queries) are held
in a dict for a second pass: correct in any order, but memory-hungry for a full MS MARCO file.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, clean_text, iter_id_text, iter_predictions

log = logging.getLogger(__name__)

Record = tuple[Path, int, str, list[str]]  # (file, line, pid, queries)


class _OutOfOrder(Exception):
    """The predictions do not follow the collection: redo the pass with a dict."""


def _records(paths: Sequence[Path]) -> Iterator[Record]:
    for path in paths:
        for number, pid, queries in iter_predictions(path):
            yield path, number, pid, queries


def _expanded(text: str, queries: Sequence[str], n_queries: int) -> str:
    # Queries are folded to one line each: a tab or newline would break the TSV.
    extra = [query for query in (clean_text(q) for q in queries[:n_queries]) if query]
    return " ".join([text, *extra])


def _without_predictions(collection: Path, number: int, pid: str, missing: str, counts: dict) -> None:
    if missing == "error":
        raise InputFormatError(collection, number, f"a passage the predictions cover; {pid} has none "
                               f"({counts['expanded']} passages had; --missing keep leaves such passages as they are)")
    counts["without_predictions"] += 1


def _streamed(collection: Path, records: Iterator[Record], out, n_queries: int, missing: str, counts: dict) -> None:
    head = next(records, None)
    for number, pid, text in iter_id_text(collection, "pid"):
        counts["passages"] += 1
        if head is not None and head[2] == pid:
            out.write(f"{pid}\t{_expanded(text, head[3], n_queries)}\n")
            counts["expanded"] += 1
            head = next(records, None)
        else:
            if head is not None and missing == "error":  # perhaps only out of order: the indexed pass tells
                raise _OutOfOrder
            _without_predictions(collection, number, pid, missing, counts)
            out.write(f"{pid}\t{text}\n")
    if head is not None:  # out of order, repeated, or unknown: only a full index tells which
        raise _OutOfOrder


def _indexed(collection: Path, records: Iterator[Record], out, n_queries: int, unknown: str, missing: str,
             counts: dict) -> None:
    table: dict[str, tuple[Path, int, list[str]]] = {}
    for path, number, pid, queries in records:
        if pid in table:
            before = f"{table[pid][0]}, line {table[pid][1]}"
            raise InputFormatError(path, number, f"one record per id; {pid} appeared before ({before})")
        table[pid] = (path, number, queries[:n_queries])
    for number, pid, text in iter_id_text(collection, "pid"):
        counts["passages"] += 1
        found = table.pop(pid, None)
        if found is None:
            _without_predictions(collection, number, pid, missing, counts)
            out.write(f"{pid}\t{text}\n")
        else:
            out.write(f"{pid}\t{_expanded(text, found[2], n_queries)}\n")
            counts["expanded"] += 1
    if table and unknown == "error":
        pid, (path, number, _) = next(iter(table.items()))
        raise InputFormatError(path, number, f"a pid of {collection}; {pid} is not in it "
                               f"({len(table)} unknown pid(s) in all; --unknown skip drops them)")
    counts["unknown_skipped"] = len(table)


def expand_collection(collection: Path, predictions: Path | Sequence[Path], out: Path, n_queries: int = 40,
                      unknown: str = "error", missing: str = "keep") -> dict[str, int]:
    """Write `collection` expanded with the first `n_queries` predicted queries of each passage to `out`.

    Returns the counts: passages, expanded (a record was found), without_predictions, unknown_skipped.
    """
    if unknown not in ("error", "skip"):
        raise ValueError(f"unknown must be 'error' or 'skip', not {unknown!r}")
    if missing not in ("error", "keep"):
        raise ValueError(f"missing must be 'error' or 'keep', not {missing!r}")
    if n_queries < 0:
        raise ValueError(f"n_queries must be >= 0, not {n_queries}")
    paths = [Path(predictions)] if isinstance(predictions, str | Path) else [Path(p) for p in predictions]
    fresh = dict.fromkeys(("passages", "expanded", "without_predictions", "unknown_skipped"), 0)
    counts = dict(fresh)
    try:
        with atomic_output(out) as handle:
            _streamed(collection, _records(paths), handle, n_queries, missing, counts)
    except _OutOfOrder:
        log.warning("predictions in %s do not follow the collection's order (or name pids it lacks): "
                    "reading them into memory", ", ".join(map(str, paths)))
        counts = dict(fresh)
        with atomic_output(out) as handle:
            _indexed(collection, _records(paths), handle, n_queries, unknown, missing, counts)
    log.info("%d passages: %d expanded with up to %d queries, %d without predictions, %d unknown pids skipped",
             counts["passages"], counts["expanded"], n_queries, counts["without_predictions"],
             counts["unknown_skipped"])
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, nargs="+", required=True,
                        help="predictions JSON lines (.jsonl or .jsonl.gz), read in the order given")
    parser.add_argument("--out", type=Path, required=True, help="expanded collection (pid<TAB>text)")
    parser.add_argument("--n-queries", type=int, default=40, help="predicted queries appended per passage")
    parser.add_argument("--unknown", choices=("error", "skip"), default="error",
                        help="predictions for pids the collection lacks")
    parser.add_argument("--missing", choices=("keep", "error"), default="keep",
                        help="passages without predictions: kept as they are, or an error")
    parser.add_argument("--counts", type=Path, default=None, help="also write the counts here (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    counts = expand_collection(args.collection, args.predictions, args.out, args.n_queries, args.unknown,
                               args.missing)
    if args.counts is not None:
        with atomic_output(args.counts) as out:
            json.dump({**counts, "n_queries": args.n_queries}, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    run_stage(main)
