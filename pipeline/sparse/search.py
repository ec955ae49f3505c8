"""BM25 search over an index built by `pipeline.sparse.index`, written as a TREC run.

    python -m pipeline.sparse.search --index resources/D/bm25 --queries resources/D/queries.dev.tsv \
        --run results/D/runs/bm25.dev.trec --k1 0.9 --b 0.4 --hits 1000 --threads 8
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.io import atomic_output, read_queries, write_run
from pipeline.sparse.index import lucene_dir
from pipeline.sparse.jvm import import_pyserini, start_jvm
from pipeline.timing import cpu_name, time_each

log = logging.getLogger(__name__)


def bm25_search(index_dir: Path, queries_path: Path, run_path: Path, *, k1: float = 0.9, b: float = 0.4,
                hits: int = 1000, threads: int = 1, batch_size: int = 1000, remove_query: bool = False,
                latency_queries: int = 200, tag: str = "bm25", max_heap: str | None = None) -> dict:
    """Search every query; write the run and, beside it, `<run>.latency.json` with timings.

    `remove_query` drops a hit whose docid equals the query id (pyserini's --remove-query, used for
    BEIR collections where queries are also documents). Latency is measured separately, one query
    at a time on one thread, over the first `latency_queries` queries: batch throughput with many
    threads is not what a user waiting on one query sees.
    """
    start_jvm(max_heap)  # without -Xmx the JVM grows towards a quarter of the machine's memory
    lucene = import_pyserini("pyserini.search.lucene")
    searcher = lucene.LuceneSearcher(str(lucene_dir(index_dir)))
    searcher.set_bm25(k1, b)
    queries = read_queries(queries_path)
    qids = list(queries)
    ranked: dict[str, list[tuple[str, float]]] = {}
    started = time.perf_counter()
    with tqdm(total=len(qids), desc="bm25", unit="q", mininterval=2) as bar:
        for lo in range(0, len(qids), batch_size):
            batch = qids[lo:lo + batch_size]
            results = searcher.batch_search([queries[q] for q in batch], batch, k=hits, threads=threads)
            for qid in batch:
                found = [(hit.docid, hit.score) for hit in results.get(qid, [])]
                ranked[qid] = [(d, s) for d, s in found if not (remove_query and d == qid)]
            bar.update(len(batch))
    batch_seconds = time.perf_counter() - started
    write_run(run_path, ranked, tag)

    timing = {"queries": len(qids), "threads": threads, "hits": hits, "device": cpu_name(), "latency_threads": 1,
              "batch_seconds": round(batch_seconds, 3),
              "batch_ms_per_query": round(1000 * batch_seconds / max(len(qids), 1), 3),
              **time_each(qids[:latency_queries], lambda qid: searcher.search(queries[qid], k=hits))}
    with atomic_output(latency_path(run_path)) as out:
        json.dump(timing, out, indent=2)
    searcher.close()
    return timing


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
