"""compare_indexes: recall@k of approximate Faiss indexes against the exact flat index.

    python -m pipeline.dense.compare_indexes --shards resources/D/embeddings/M/shard-* \
        --collection resources/D/collection.tsv --queries results/D/queries/M.dev --kinds hnsw ivfpq \
        --out results/D/indexes/M.dev.tsv

Every index is built from the same shards with build_index (the configured parameters), searched
with the same encoded queries, and compared with flat inner-product search, whose top-k is the
truth. One row per kind: recall@k, search latency for one query at a time, bytes per passage and
build time, which is the trade-off a user weighs before choosing HNSW or IVF-PQ at scale.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from pipeline.cli import run_stage
from pipeline.dense.index import KINDS, add_index_arguments, build_index, index_parameters
from pipeline.dense.search import load_index
from pipeline.durable import atomic_output, remove_stale_staging
from pipeline.shards import open_shard
from pipeline.timing import time_each

log = logging.getLogger(__name__)


def compare_indexes(shard_dirs: list[Path], collection: Path, queries_dir: Path, out: Path, kinds: list[str],
                    k: int = 10, threads: int = 1, latency_queries: int = 200, **index_params) -> pd.DataFrame:
    """Build flat and each approximate kind, search them all, and write one row per kind to `out` (TSV)."""
    faiss.omp_set_num_threads(threads)
    vectors, _, _ = open_shard(queries_dir)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    rows, exact = [], None
    remove_stale_staging(out)  # a killed run's scratch indexes (each as large as the flat index)
    with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=f".{Path(out).name}.", suffix=".tmp") as scratch:
        for kind in ["flat", *(kind for kind in kinds if kind != "flat")]:
            started = time.perf_counter()
            build_index(shard_dirs, collection, Path(scratch, kind), kind, **index_params)
            build_seconds = time.perf_counter() - started
            index, _, manifest = load_index(Path(scratch, kind))
            top = index.search(vectors, min(k, index.ntotal))[1]
            if exact is None:
                exact = top
            # Recall@k against flat: the share of the exact top-k that the approximate top-k keeps.
            found = [len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(top, exact, strict=True)]
            latency = time_each(range(min(latency_queries, len(vectors))),
                                lambda row, index=index: index.search(vectors[row:row + 1], k))
            rows.append({"kind": kind, f"recall@{k}": round(float(np.mean(found)), 4),
                         "search_ms_median": latency["latency_ms_median"], "search_ms_p95": latency["latency_ms_p95"],
                         "bytes_per_passage": manifest["bytes_per_passage"], "build_seconds": round(build_seconds, 2),
                         "queries": len(vectors), "passages": manifest["count"], "threads": threads})
            log.info("%s: recall@%d %.4f, %s ms/query", kind, k, rows[-1][f"recall@{k}"], latency["latency_ms_median"])
    table = pd.DataFrame(rows)
    with atomic_output(out) as handle:
        table.to_csv(handle, sep="\t", index=False)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, nargs="+", required=True)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="directory written by pipeline.dense.queries")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-queries", type=int, default=200)
    add_index_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    compare_indexes(args.shards, args.collection, args.queries, args.out, args.kinds, args.k, args.threads,
                    args.latency_queries, **index_parameters(args))


if __name__ == "__main__":
    run_stage(main)
