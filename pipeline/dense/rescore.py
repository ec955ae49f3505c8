"""dense_rerank: a bi-encoder re-scores a first-stage run's top k (Table 3's re-ranking column).

    python -m pipeline.dense.rescore --shards resources/D/embeddings/M/shard-* --queries results/D/queries/M.dev \
        --candidates results/D/runs/bm25.dev.trec --run results/D/runs/M-rerank-bm25.dev.trec --depth 1000

Scores are dot products of the stored passage embeddings with the encoded queries, so the
student's re-ranking and full-retrieval numbers come from the very same vectors. Every shard (and
the encoded queries) is verified against its manifest before use, blake2b checksum of `emb.npy`
included (pipeline.shards.open_shard; about 1 s per GB of shards).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from pipeline.cli import run_stage
from pipeline.formats import InputFormatError, read_run, write_run
from pipeline.shards import MANIFEST_FILE, open_shard

log = logging.getLogger(__name__)


def dense_rerank(shard_dirs: list[Path], queries_dir: Path, candidates: Path, run_path: Path, depth: int = 1000,
                 tag: str = "dense-rerank") -> int:
    """Write the re-scored run; returns the number of queries."""
    vectors, qids, query_manifest = open_shard(queries_dir)
    rows: dict[str, tuple[np.ndarray, int]] = {}
    for directory in shard_dirs:
        embeddings, ids, manifest = open_shard(directory)
        if manifest["model_fingerprint"] != query_manifest["model_fingerprint"]:
            raise InputFormatError(Path(directory) / MANIFEST_FILE, None, "embeddings of the query encoder's model",
                                   manifest["model"])
        rows.update({pid: (embeddings, row) for row, pid in enumerate(ids)})
    first = read_run(candidates)
    ranked = {}
    for row, qid in enumerate(qids):
        pids = sorted(first.get(qid, {}), key=lambda p: -first[qid][p])[:depth]
        if not pids:
            continue
        missing = [p for p in pids if p not in rows]
        if missing:
            raise InputFormatError(candidates, None, "candidates from the encoded collection", missing[0])
        docs = np.stack([np.asarray(rows[p][0][rows[p][1]], dtype=np.float32) for p in pids])
        scores = docs @ vectors[row].astype(np.float32)
        order = np.lexsort((np.array(pids), -scores))
        ranked[qid] = [(pids[i], float(scores[i])) for i in order]
    write_run(run_path, ranked, tag)
    return len(ranked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, nargs="+", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--tag", default="dense-rerank")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    count = dense_rerank(args.shards, args.queries, args.candidates, args.run, args.depth, args.tag)
    log.info("re-scored the candidates of %d queries", count)


if __name__ == "__main__":
    run_stage(main)
