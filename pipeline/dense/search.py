"""dense_run: search a Faiss index with encoded queries; a TREC run with float32 scores.

    python -m pipeline.dense.search --index resources/D/indexes/dense-M --queries results/D/queries/M.dev \
        --run results/D/runs/M.dev.trec --hits 1000 --threads 8

Queries and index must come from the same model (checked through their manifests). Beside the
run, `<run>.latency.json` holds the search time for one query at a time (median and p95, ms) and
the query encoder's own latency, so the row's latency is encoder + search as the paper counts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import faiss
import numpy as np

from pipeline.cli import run_stage
from pipeline.io import MANIFEST_FILE, InputFormatError, atomic_output, open_shard, read_manifest, write_run
from pipeline.timing import time_each

log = logging.getLogger(__name__)


def load_index(index_dir: Path) -> tuple[faiss.Index, list[str], dict]:
    """The index, its docids and its manifest, with search-time parameters applied."""
    manifest = read_manifest(index_dir)
    index = faiss.read_index(str(Path(index_dir) / "index"))
    docids = (Path(index_dir) / "docid").read_text(encoding="utf-8").splitlines()
    if index.ntotal != manifest["count"] or len(docids) != manifest["count"]:
        raise InputFormatError(index_dir, None, f"{manifest['count']} vectors and docids",
                               f"{index.ntotal} vectors, {len(docids)} docids")
    if manifest["kind"] == "hnsw":
        index.hnsw.efSearch = manifest["params"]["ef_search"]
    elif manifest["kind"] == "ivfpq":
        index.nprobe = manifest["params"]["nprobe"]
    return index, docids, manifest


def dense_search(index_dir: Path, queries_dir: Path, run_path: Path, hits: int = 1000, threads: int = 1,
                 batch_size: int = 256, latency_queries: int = 200, tag: str = "dense") -> dict:
    """Write the top-`hits` run for every encoded query; returns the timing record."""
    faiss.omp_set_num_threads(threads)
    index, docids, index_manifest = load_index(index_dir)
    vectors, qids, query_manifest = open_shard(queries_dir)
    for key in ("model_fingerprint", "dims"):
        if query_manifest[key] != index_manifest[key]:
            raise InputFormatError(Path(queries_dir) / MANIFEST_FILE, None,
                                   f"{key} = {index_manifest[key]!r} as the index {index_dir}",
                                   repr(query_manifest[key]))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(hits, index.ntotal)
    ranked = {}
    started = time.perf_counter()
    for start in range(0, len(qids), batch_size):
        scores, rows = index.search(vectors[start:start + batch_size], k)
        for qid, row_scores, row_ids in zip(qids[start:start + batch_size], scores, rows, strict=True):
            ranked[qid] = [(docids[i], float(s)) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
    batch_seconds = time.perf_counter() - started
    write_run(run_path, ranked, tag)
    search = time_each(range(min(latency_queries, len(qids))), lambda row: index.search(vectors[row:row + 1], k))
    timing = {"queries": len(qids), "threads": threads, "hits": hits, "index": index_manifest["kind"],
              "batch_seconds": round(batch_seconds, 3), "search_ms_median": search["latency_ms_median"],
              "search_ms_p95": search["latency_ms_p95"], "encoder_ms_median": query_manifest.get("latency_ms_median")}
    parts = [timing["search_ms_median"], timing["encoder_ms_median"]]
    timing["latency_ms_median"] = round(sum(parts), 3) if None not in parts else None
    with atomic_output(Path(run_path).with_suffix(".latency.json")) as out:
        json.dump(timing, out, indent=2)
    return timing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="directory written by pipeline.dense.queries")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--tag", default="dense")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    timing = dense_search(args.index, args.queries, args.run, args.hits, args.threads,
                          latency_queries=args.latency_queries, tag=args.tag)
    log.info("searched %d queries; %s ms/query search latency", timing["queries"], timing["search_ms_median"])


if __name__ == "__main__":
    run_stage(main)
