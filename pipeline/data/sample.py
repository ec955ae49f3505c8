"""sample_queries: a seeded sample of judged training queries (the paper tunes alpha on 6,000).

    python -m pipeline.data.sample --queries resources/D/queries.train.tsv --qrels resources/D/qrels.train.txt \
        --n 6000 --seed 13 --out-queries resources/D/queries.tune.tsv --out-qrels resources/D/qrels.tune.txt
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from pipeline.cli import run_stage
from pipeline.formats import read_qrels, read_queries, write_id_text, write_qrels

log = logging.getLogger(__name__)


def sample_queries(queries_path: Path, qrels_path: Path, n: int, seed: int, out_queries: Path,
                   out_qrels: Path) -> int:
    """Write up to `n` judged queries (all of them when fewer exist) in their original order.

    Judged means at least one judgement with relevance > 0: a query judged only 0 or -1 has nothing
    to find, so RR would score it 0 at every alpha.
    """
    queries, qrels = read_queries(queries_path), read_qrels(qrels_path)
    judged = [qid for qid in queries if any(rel > 0 for rel in qrels.get(qid, {}).values())]
    if not judged:
        raise ValueError(f"{queries_path}: no query with a relevant judgement in {qrels_path}")
    picked = set(np.random.default_rng(seed).choice(len(judged), size=min(n, len(judged)), replace=False).tolist())
    chosen = [qid for i, qid in enumerate(judged) if i in picked]
    if len(chosen) < n:
        log.warning("only %d judged queries exist; all are used instead of %d", len(chosen), n)
    write_id_text(out_queries, ((qid, queries[qid]) for qid in chosen))
    write_qrels(out_qrels, {qid: qrels[qid] for qid in chosen})
    return len(chosen)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out-queries", type=Path, required=True)
    parser.add_argument("--out-qrels", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    count = sample_queries(args.queries, args.qrels, args.n, args.seed, args.out_queries, args.out_qrels)
    log.info("sampled %d queries", count)


if __name__ == "__main__":
    run_stage(main)
