"""BM25 search over an index built by `pipeline.sparse.index`, written as a TREC run.

    python -m pipeline.sparse.search --index resources/D/bm25 --queries resources/D/queries.dev.tsv \
        --run results/D/runs/bm25.dev.trec --k1 0.9 --b 0.4 --hits 1000 --threads 8

The run is searched and written by Anserini's own `SearchCollection`, inside this process's JVM:
pyserini's batch search hands every hit to Python one JNI call at a time, which made the stage
twice as slow as Anserini. The run is byte for byte the one pyserini's `LuceneSearcher` and
`write_run` give: the same similarity, analyzer and tie-breaking (both round scores to 4 decimals
and order ties by docid), with the queries put back in the queries file's order (SearchCollection
writes them sorted by qid) and the rare score that Java's `%f` rounds otherwise than Python's
`.6f` printed again (`halfway_scores`).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cli import run_stage
from pipeline.durable import atomic_output, remove_stale_staging
from pipeline.formats import InputFormatError, iter_id_text
from pipeline.sparse.index import lucene_dir
from pipeline.sparse.jvm import start_jvm
from pipeline.timing import cpu_name, time_each

# io.anserini.search.SimpleSearcher through jnius: search(text, k) -> ScoredDoc[] (docid, score), close().
SimpleSearcher = Any
log = logging.getLogger(__name__)
# Anserini's TsvString reader keeps a query's text up to a second tab and ends a line at a lone CR
# too; both are whitespace to the analyzer, so spaces in their place search the same text.
TOPIC_TEXT = str.maketrans("\t\r", "  ")


def bm25_search(index_dir: Path, queries_path: Path, run_path: Path, *, k1: float = 0.9, b: float = 0.4,
                hits: int = 1000, threads: int = 1, remove_query: bool = False,
                latency_queries: int = 200, tag: str = "bm25", max_heap: str | None = None) -> dict:
    """Search every query; write the run and, beside it, `<run>.latency.json` with timings.

    `remove_query` drops a hit whose docid equals the query id (pyserini's --remove-query, used for
    BEIR collections where queries are also documents; a query keeps hits - 1 hits then). Latency is
    measured separately, one query at a time on one thread, over the first `latency_queries` queries:
    batch throughput with many threads is not what a user waiting on one query sees.
    """
    run_path = Path(run_path)
    start_jvm(max_heap)  # without -Xmx the JVM grows towards a quarter of the machine's memory
    started = time.perf_counter()
    queries = read_search_queries(queries_path)
    run_path.parent.mkdir(parents=True, exist_ok=True)
    # Anserini's topics and run are scratch files beside the run (the run can be large), gone afterwards.
    remove_stale_staging(run_path)
    with tempfile.TemporaryDirectory(prefix=f".{run_path.name}.", suffix=".tmp", dir=run_path.parent) as scratch:
        topics, anserini_run = Path(scratch, "topics.tsv"), Path(scratch, "run.trec")
        with open(topics, "w", encoding="utf-8", newline="\n") as out:
            out.writelines(f"{qid}\t{text.translate(TOPIC_TEXT)}\n" for qid, text in queries.items())
        search_collection(lucene_dir(index_dir), topics, anserini_run, k1=k1, b=b, hits=hits, threads=threads,
                          remove_query=remove_query, tag=tag)
        run = anserini_run.read_bytes()
    blocks, halfway = query_blocks(run), halfway_scores(run, tag)
    missing = {qid: text for qid, text in queries.items() if qid not in blocks}
    if missing or halfway:  # rare, so searching those queries again costs next to nothing
        with contextlib.closing(open_searcher(index_dir, k1, b)) as searcher:
            check_no_hits(searcher, missing, hits, remove_query)
            run = round_half_even(run, halfway, searcher, queries, hits)
    view = memoryview(run)
    with atomic_output(run_path, "wb") as out:  # in the queries file's order
        out.writelines(view[blocks[qid]] for qid in queries if qid in blocks)
    batch_seconds = time.perf_counter() - started

    qids = list(queries)
    with contextlib.closing(open_searcher(index_dir, k1, b)) as searcher:
        # Each hit's docid and score read into Python, as a caller of the searcher would.
        latency = time_each(qids[:latency_queries],
                            lambda qid: [(hit.docid, hit.score) for hit in searcher.search(queries[qid], hits)])
    timing = {"queries": len(qids), "threads": threads, "hits": hits, "device": cpu_name(), "latency_threads": 1,
              "batch_seconds": round(batch_seconds, 3),
              "batch_ms_per_query": round(1000 * batch_seconds / max(len(qids), 1), 3), **latency}
    with atomic_output(latency_path(run_path)) as out:
        json.dump(timing, out, indent=2)
    return timing


def open_searcher(index_dir: Path, k1: float, b: float) -> SimpleSearcher:
    """Anserini's SimpleSearcher, the Java object pyserini's LuceneSearcher wraps, on the index with our BM25
    parameters (for one query at a time). Called through jnius as LuceneSearcher calls it: importing
    pyserini.search.lucene would take ~6 s of each job (it imports pyserini's encoders, torch, transformers)."""
    from jnius import autoclass

    start_jvm()
    searcher = autoclass("io.anserini.search.SimpleSearcher")(str(lucene_dir(index_dir)))
    searcher.set_bm25(float(k1), float(b))
    return searcher


def read_search_queries(path: Path) -> dict[str, str]:
    """`qid<TAB>text` in file order: ids unique, text non-empty (as read_queries), and ids without
    whitespace or control characters, which would break the run's space-separated fields (and
    Anserini, which trims a line's control characters and ends lines at a lone CR)."""
    queries = {}
    for number, qid, text in iter_id_text(path, "qid"):
        if re.search(r"[\s\x00-\x1f]", qid):
            raise InputFormatError(path, number, "a qid without whitespace or control characters", qid)
        queries[qid] = text
    return queries


def search_collection(lucene_index: Path, topics: Path, run: Path, *, k1: float, b: float, hits: int,
                      threads: int, remove_query: bool, tag: str) -> None:
    """Run Anserini's SearchCollection on a TsvString topics file; it writes `run` (queries in qid order).

    Constructed directly rather than through its `main`, which prints a bad argument or a missing
    index and returns as if it had succeeded.
    """
    from jnius import autoclass

    args = autoclass("io.anserini.search.SearchCollection$Args")()
    argv = ["-index", str(Path(lucene_index).absolute()), "-topics", str(Path(topics).absolute()),
            "-topicReader", "TsvString", "-output", str(Path(run).absolute()), "-runtag", tag,
            "-bm25", "-bm25.k1", java_float(k1), "-bm25.b", java_float(b), "-hits", str(hits),
            "-threads", str(threads)] + (["-removeQuery"] if remove_query else [])
    autoclass("org.kohsuke.args4j.CmdLineParser")(args).parseArgument(*argv)
    search = autoclass("io.anserini.search.SearchCollection")(args)
    try:
        search.run()
    finally:
        search.close()
    if not run.is_file():  # its workers' errors are printed, not raised
        raise RuntimeError(f"Anserini's SearchCollection wrote no run to {run} (its log says why)")


def java_float(value: float) -> str:
    """`value` rounded to a float32, as pyserini hands it to Java, in the fewest digits that
    Float.parseFloat reads back as that float (SearchCollection takes k1 and b as text)."""
    return np.format_float_positional(np.float32(value))


def query_blocks(run: bytes) -> dict[str, slice]:
    """Where each query's lines are in a run that writes them together (as SearchCollection does).

    A block ends where the line holding a byte stops starting with the block's qid: a bisection.
    """
    blocks: dict[str, slice] = {}
    start = 0
    while start < len(run):
        head = run[start:run.index(b" ", start) + 1]
        size = bisect.bisect_left(range(start, len(run)), True,
                                  key=lambda at: not run.startswith(head, run.rfind(b"\n", 0, at) + 1))
        qid = head[:-1].decode("utf-8")
        if qid in blocks:
            raise RuntimeError(f"query {qid}'s lines are not together in Anserini's run")
        blocks[qid] = slice(start, start + size)
        start += size
    return blocks


def halfway_scores(run: bytes, tag: str) -> list[tuple[slice, str, str]]:
    """(score, qid, docid) of the lines whose score Java may have printed otherwise than write_run.

    A float exactly halfway between two 6-decimal values (e.g. 15.6640625) goes up in Java's `%f`
    and to the even neighbour in Python's `.6f`. The half below Java's N micro-units is a binary
    fraction only for N = 7813 (mod 15625), and the even neighbour is the lower one only for odd N:
    N = 7813 (mod 31250), whose fraction ends in 13 or 63, found by searching the bytes. Rare: it
    takes a long tie (SciFact's 300 test queries have none in their 300,000 hits).
    """
    found = []
    for ending in (b"13 ", b"63 "):
        needle = ending + tag.encode("utf-8") + b"\n"
        at = run.find(needle)
        while at >= 0:
            end = at + 2
            start = run.rfind(b" ", 0, end) + 1
            if abs(int(run[start:end].replace(b".", b""))) % 31250 == 7813:
                qid, _, docid = run[run.rfind(b"\n", 0, start) + 1:start].split(b" ", 3)[:3]
                found.append((slice(start, end), qid.decode("utf-8"), docid.decode("utf-8")))
            at = run.find(needle, end)
    return found


def round_half_even(run: bytes, halfway: list[tuple[slice, str, str]], searcher: SimpleSearcher,
                    queries: dict[str, str], hits: int) -> bytes:
    """`run` with the `halfway` scores printed as write_run prints pyserini's (the same floats)."""
    fixed, exact = bytearray(run), {}
    for score, qid, docid in halfway:
        if qid not in exact:
            exact[qid] = {hit.docid: hit.score for hit in searcher.search(queries[qid], hits)}
        fixed[score] = f"{exact[qid][docid]:.6f}".encode()  # as wide: only the last digit can differ
    return bytes(fixed)


def check_no_hits(searcher: SimpleSearcher, queries: dict[str, str], hits: int, remove_query: bool) -> None:
    """Queries absent from Anserini's run must have no hits: SearchCollection prints a query that
    fails (e.g. one of more than 1024 terms) and leaves it out, where pyserini raises the error."""
    for qid, text in queries.items():
        try:
            found = [hit.docid for hit in searcher.search(text, hits)]
        except Exception as err:  # jnius.JavaException, which names no query
            err.add_note(f"while searching query {qid}")
            raise
        if [docid for docid in found if not (remove_query and docid == qid)]:
            raise RuntimeError(f"Anserini's SearchCollection left out query {qid}, which has hits (see its log)")


def latency_path(run_path: Path) -> Path:
    """The timing file written beside a run."""
    return Path(run_path).with_suffix(".latency.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--k1", type=float, default=0.9)
    parser.add_argument("--b", type=float, default=0.4)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--remove-query", action="store_true")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--tag", default="bm25")
    parser.add_argument("--max-heap", default=None, help="JVM -Xmx, e.g. 8g")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    timing = bm25_search(args.index, args.queries, args.run, k1=args.k1, b=args.b, hits=args.hits,
                         threads=args.threads, remove_query=args.remove_query,
                         latency_queries=args.latency_queries, tag=args.tag, max_heap=args.max_heap)
    log.info("searched %d queries: %.2f ms/query batched, %s ms median latency", timing["queries"],
             timing["batch_ms_per_query"], timing["latency_ms_median"])


if __name__ == "__main__":
    run_stage(main)
