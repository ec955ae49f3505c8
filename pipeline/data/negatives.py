"""mine_negatives: training triples from a BM25 run, for datasets without official triples.

    python -m pipeline.data.negatives --run results/D/runs/bm25.train.trec --qrels resources/D/qrels.train.txt \
        --out resources/D/triples.train.tsv --depth 200 --per-positive 4 --seed 13

The paper's negatives are BM25 negatives: for each (query, positive) we sample, without
replacement, from the query's BM25 top-`depth` with every judged-relevant passage removed.
Relevant means relevance > 0, as for trec_eval: a passage judged 0 or below (TREC's -1 for junk)
is never a positive, and stays a candidate negative: judged non-relevant, it is a sound one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from pipeline.cli import run_stage
from pipeline.io import read_qrels, read_run, write_triples

log = logging.getLogger(__name__)


def mine_negatives(run_path: Path, qrels_path: Path, out_path: Path, *, depth: int = 200,
                   per_positive: int = 4, seed: int = 13) -> int:
    """Write `qid<TAB>pos<TAB>neg` triples; returns how many. Deterministic for a seed and inputs."""
    run, qrels = read_run(run_path), read_qrels(qrels_path)
    rng = np.random.default_rng(seed)
    triples: list[tuple[str, str, str]] = []
    no_candidates = 0
    for qid, judged in qrels.items():
        positives = [pid for pid, rel in judged.items() if rel > 0]
        ranked = sorted(run.get(qid, {}).items(), key=lambda hit: (-hit[1], hit[0]))[:depth]
        candidates = [pid for pid, _ in ranked if judged.get(pid, 0) <= 0]
        if not positives:
            continue
        if not candidates:
            no_candidates += 1
            continue
        for pos in positives:
            picks = rng.choice(len(candidates), size=min(per_positive, len(candidates)), replace=False)
            triples.extend((qid, pos, candidates[i]) for i in sorted(picks))
    if no_candidates:
        log.warning("%d queries skipped: no BM25 candidate left after removing positives", no_candidates)
    if not triples:
        raise ValueError(f"no triples could be mined from {run_path} and {qrels_path}")
    return write_triples(out_path, triples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=200)
    parser.add_argument("--per-positive", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    count = mine_negatives(args.run, args.qrels, args.out, depth=args.depth,
                           per_positive=args.per_positive, seed=args.seed)
    log.info("wrote %d triples to %s", count, args.out)


if __name__ == "__main__":
    run_stage(main)
