"""BM25 search: our stage (pyserini's LuceneSearcher, batched) vs Anserini's SearchCollection.

Same index, same queries, same k1/b, hits and threads, one process. Prints ms/query for each and
the ratio, plus our single-query latency. Default input: SciFact from ../shared/data.

    python benchmarks/bm25_search.py [--beir-dir ../shared/data/scifact] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.data.beir import beir_source
from pipeline.data.prepare import prepare_data
from pipeline.io import read_run
from pipeline.sparse.index import build_bm25_index, lucene_dir
from pipeline.sparse.jvm import start_jvm
from pipeline.sparse.search import bm25_search


def anserini_search(index: Path, queries: Path, run: Path, hits: int, threads: int) -> None:
    from jnius import autoclass

    autoclass("io.anserini.search.SearchCollection").main([
        "-index", str(lucene_dir(index)), "-topics", str(queries), "-topicReader", "TsvString",
        "-output", str(run), "-bm25", "-bm25.k1", "0.9", "-bm25.b", "0.4", "-hits", str(hits),
        "-threads", str(threads)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
    parser.add_argument("--beir-dir", type=Path, default=default)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bm25-bench."))
    prepare_data(beir_source("scifact", args.beir_dir, work / "dl", ["test"]), work / "data", ["test"])
    queries = work / "data" / "queries.test.tsv"
    n_queries = len(queries.read_text(encoding="utf-8").splitlines())
    tick = time.perf_counter()
    build_bm25_index(work / "data" / "collection.tsv", work / "index", threads=args.threads)
    index_seconds = time.perf_counter() - tick
    start_jvm()
    anserini_search(work / "index", queries, work / "warmup.trec", args.hits, args.threads)  # JIT warm-up

    ours, theirs, latency = [], [], []
    for _ in range(args.repeats):
        tick = time.perf_counter()
        timing = bm25_search(work / "index", queries, work / "ours.trec", hits=args.hits, threads=args.threads,
                             latency_queries=n_queries)
        ours.append(timing["batch_seconds"])
        latency.append(timing["latency_ms_median"])
        tick = time.perf_counter()
        anserini_search(work / "index", queries, work / "anserini.trec", args.hits, args.threads)
        theirs.append(time.perf_counter() - tick)
    same = read_run(work / "ours.trec") == read_run(work / "anserini.trec")
    ms = lambda seconds: 1000 * statistics.median(seconds) / n_queries  # noqa: E731
    print(f"\nSciFact test: {n_queries} queries, {args.hits} hits, {args.threads} threads; "
          f"index built in {index_seconds:.1f} s; identical runs: {same}\n")
    print("| stage | ms/query (batched) | ratio vs Anserini |")
    print("|---|---|---|")
    ratio = ms(ours) / ms(theirs)
    print(f"| ours: pyserini LuceneSearcher.batch_search + run writer | {ms(ours):.2f} | {ratio:.2f}x |")
    print(f"| Anserini SearchCollection (Java, writes the run) | {ms(theirs):.2f} | 1.00x |")
    print(f"| ours, one query at a time, 1 thread (median latency) | {statistics.median(latency):.2f} | |")


if __name__ == "__main__":
    main()
