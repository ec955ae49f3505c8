"""BM25 search: our stage vs Anserini's own SearchCollection, and pyserini's batch search.

Same index, same queries, same k1/b, hits and threads, one process (JIT warmed up), interleaved
repeats. Our stage runs SearchCollection inside our JVM, then puts the run in the queries file's
order; its time is the whole bm25_search call without the single-query latency loop (reading and
checking the queries, the run renamed into place, the SimpleSearcher that loop opens). The
reference is SearchCollection's `main`, as its command line runs it. pyserini's
LuceneSearcher.batch_search + write_run is what the stage did before issue 13: its run must be ours
byte for byte. "best" is the fastest repeat, the least disturbed by other processes. Default input:
SciFact from ../shared/data.

    python benchmarks/bm25_search.py [--beir-dir ../shared/data/scifact] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pipeline.data.beir import beir_source
from pipeline.data.prepare import prepare_data
from pipeline.formats import read_queries, read_run, write_run
from pipeline.sparse.index import build_bm25_index, lucene_dir
from pipeline.sparse.jvm import import_pyserini, start_jvm
from pipeline.sparse.search import bm25_search
from pipeline.timing import cpu_name


def anserini_search(index: Path, queries: Path, run: Path, hits: int, threads: int) -> None:
    from jnius import autoclass

    autoclass("io.anserini.search.SearchCollection").main([
        "-index", str(lucene_dir(index)), "-topics", str(queries), "-topicReader", "TsvString",
        "-output", str(run), "-bm25", "-bm25.k1", "0.9", "-bm25.b", "0.4", "-hits", str(hits),
        "-threads", str(threads)])


def pyserini_search(index: Path, queries_path: Path, run: Path, hits: int, threads: int) -> None:
    """The stage before issue 13: one batch_search, every hit read from Python, then write_run."""
    searcher = import_pyserini("pyserini.search.lucene").LuceneSearcher(str(lucene_dir(index)))
    searcher.set_bm25(0.9, 0.4)
    queries = read_queries(queries_path)
    results = searcher.batch_search(list(queries.values()), list(queries), k=hits, threads=threads)
    write_run(run, {qid: [(hit.docid, hit.score) for hit in results.get(qid, [])] for qid in queries}, "bm25")
    searcher.close()


def cpu_capability() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return torch.backends.cpu.get_cpu_capability()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
    parser.add_argument("--beir-dir", type=Path, default=default)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bm25-bench."))
    prepare_data(beir_source("scifact", args.beir_dir, work / "dl", ["test"]), work / "data", ["test"])
    queries = work / "data" / "queries.test.tsv"
    n_queries = len(queries.read_text(encoding="utf-8").splitlines())
    tick = time.perf_counter()
    build_bm25_index(work / "data" / "collection.tsv", work / "index", threads=args.threads)
    index_seconds = time.perf_counter() - tick
    start_jvm()
    from jnius import autoclass

    index = work / "index"
    searches: dict[str, Callable[[], object]] = {
        "ours": partial(bm25_search, index, queries, work / "ours.trec", hits=args.hits, threads=args.threads,
                        latency_queries=0),
        "anserini": partial(anserini_search, index, queries, work / "anserini.trec", args.hits, args.threads),
        "pyserini": partial(pyserini_search, index, queries, work / "pyserini.trec", args.hits, args.threads)}
    searches["anserini"]()  # JIT warm-up
    searches["ours"]()  # and pyserini's imports, out of the first repeat
    collect_garbage = autoclass("java.lang.System").gc
    seconds: dict[str, list[float]] = {name: [] for name in searches}
    for repeat in range(args.repeats):
        # ours and Anserini's take turns to go first; pyserini's, the slowest, goes last
        for name in ("ours", "anserini", "pyserini") if repeat % 2 == 0 else ("anserini", "ours", "pyserini"):
            collect_garbage()  # the garbage left by the search before is not the next one's cost
            tick = time.perf_counter()
            searches[name]()
            seconds[name].append(time.perf_counter() - tick)
    latency = bm25_search(index, queries, work / "latency.trec", hits=args.hits, threads=args.threads,
                          latency_queries=n_queries)["latency_ms_median"]
    same = read_run(work / "ours.trec") == read_run(work / "anserini.trec")
    same_bytes = (work / "ours.trec").read_bytes() == (work / "pyserini.trec").read_bytes()
    median = {name: 1000 * statistics.median(times) / n_queries for name, times in seconds.items()}
    best = {name: 1000 * min(times) / n_queries for name, times in seconds.items()}  # least disturbed

    def row(label: str, name: str) -> str:
        return (f"| {label} | {median[name]:.2f} | {best[name]:.2f} | {median[name] / median['anserini']:.2f}x | "
                f"{best[name] / best['anserini']:.2f}x |")

    print(f"\nSciFact test: {n_queries} queries, {args.hits} hits, {args.threads} threads, {args.repeats} repeats; "
          f"CPU: {cpu_name()}, torch CPU capability: {cpu_capability()}; index built in {index_seconds:.1f} s; "
          f"identical runs (read_run) to Anserini's: {same}; byte-identical to pyserini's batch search + "
          f"write_run: {same_bytes}\n")
    print("| stage | ms/query (batched), median | best | ratio vs Anserini, median | best |")
    print("|---|---|---|---|---|")
    print(row("ours: SearchCollection in our JVM, run put in the queries' order", "ours"))
    print(row("Anserini SearchCollection (Java, writes the run)", "anserini"))
    print(row("before issue 13: pyserini LuceneSearcher.batch_search + write_run", "pyserini"))
    print(f"| ours, one query at a time, 1 thread (median latency) | {latency:.2f} | | | |")
    shutil.rmtree(work)  # ~50 MB of index and runs


if __name__ == "__main__":
    main()
