"""mine_negatives: training triples from any run over the train queries (BM25, a dense model's, a published one's).

    python -m pipeline.data.negatives --run results/D/runs/bm25.train.trec --qrels resources/D/qrels.train.txt \
        --out resources/D/triples.train.tsv --depth 200 --per-positive 4 --seed 13 \
        [--manifest resources/D/triples.train.json --source bm25]

For each (query, positive) we sample, without replacement, `per_positive` negatives from the query's
top-`depth` hits of the run with every judged-relevant passage removed. From a BM25 run these are the
paper's BM25 negatives (for datasets without official triples); from a dense model's own run over the
train queries they are TCT-ColBERT v2's hard negatives (top 200, judged positives skipped), for the HN
and HN+ rounds. Relevant means relevance > 0, as for trec_eval: a passage judged 0 or below (TREC's -1
for junk) is never a positive, and stays a candidate negative: judged non-relevant, it is a sound one.

`--manifest` writes a JSON record of the run mined (and `--source`, a label such as the dense model's
name), the settings and the counts, among them the queries that gave no triple and why.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, iter_lines, read_qrels, read_run, run_line, write_triples

log = logging.getLogger(__name__)
EXAMPLES = 5  # query ids the manifest lists per kind of dropped query


def _ranked(hits: dict[str, float], depth: int) -> list[str]:
    """The top `depth` docids by score, ties broken by docid (the order mining has always used)."""
    return [pid for pid, _ in sorted(hits.items(), key=lambda hit: (-hit[1], hit[0]))[:depth]]


def _top_hits(run_path: Path, wanted: set[str], depth: int) -> tuple[dict[str, list[str]], set[str]]:
    """({qid: its top-`depth` docids} for the qids in `wanted`, every qid of the run).

    A train run over MS MARCO's 0.5M queries holds 100M-500M lines: read whole (read_run) that is tens of
    GB of dicts. Runs are written one query after the other, so each query's block is cut to its top
    `depth` as soon as it ends, and docids are interned (a passage recurs across queries): about 2 GB at
    0.5M x 200. A run whose queries are not contiguous is read whole instead, with the same result.
    """
    top: dict[str, list[str]] = {}
    seen: set[str] = set()
    current: str | None = None
    hits: dict[str, float] = {}
    for number, line in iter_lines(run_path):
        parsed = run_line(run_path, number, line)
        if parsed is None:
            continue
        qid, docid, score = parsed
        if qid != current:
            if current in wanted:
                top[current] = _ranked(hits, depth)
            if qid in seen:  # a query's hits split into several blocks: fall back to the whole run
                run = read_run(run_path)
                return {q: _ranked(run[q], depth) for q in wanted if q in run}, set(run)
            seen.add(qid)
            current, hits = qid, {}
        if qid in wanted:
            if docid in hits:
                raise InputFormatError(run_path, number, f"each docid once per query; {docid} repeated")
            hits[sys.intern(docid)] = score
    if current in wanted:
        top[current] = _ranked(hits, depth)
    return top, seen


def mine_negatives(run_path: Path, qrels_path: Path, out_path: Path, *, depth: int = 200, per_positive: int = 4,
                   seed: int = 13, manifest_path: Path | None = None, source: str | None = None) -> int:
    """Write `qid<TAB>pos<TAB>neg` triples (and, with `manifest_path`, the manifest); returns how many.

    Deterministic for a seed and inputs. Raises ValueError when the run holds none of the judged queries
    (a run of another split) or when no triple can be mined.
    """
    if depth < 1 or per_positive < 1:
        raise ValueError(f"depth ({depth}) and per_positive ({per_positive}) must be at least 1")
    qrels = read_qrels(qrels_path)
    positives = {qid: [pid for pid, rel in judged.items() if rel > 0] for qid, judged in qrels.items()}
    positives = {qid: pids for qid, pids in positives.items() if pids}
    top, run_qids = _top_hits(run_path, set(positives), depth)
    if not run_qids & qrels.keys():
        raise ValueError(f"{run_path} holds none of the {len(qrels):,} queries judged in {qrels_path} "
                         f"({len(run_qids):,} other queries): a run of another split?")
    rng = np.random.default_rng(seed)
    triples: list[tuple[str, str, str]] = []
    missing: list[str] = []
    without_negatives: list[str] = []
    short = 0
    # qrels order and one rng draw per (query, positive), as before the manifest existed: same seed, same triples.
    for qid, pids in positives.items():
        if qid not in run_qids:
            missing.append(qid)
            continue
        judged = qrels[qid]
        candidates = [pid for pid in top.get(qid, []) if judged.get(pid, 0) <= 0]
        if not candidates:
            without_negatives.append(qid)
            continue
        for pos in pids:
            picks = rng.choice(len(candidates), size=min(per_positive, len(candidates)), replace=False)
            triples.extend((qid, pos, candidates[i]) for i in sorted(picks))
            short += len(candidates) < per_positive
    if without_negatives:
        log.warning("%d queries skipped: no candidate left in the run's top %d after removing positives (e.g. %s)",
                    len(without_negatives), depth, ", ".join(without_negatives[:EXAMPLES]))
    if missing:
        log.warning("%d queries with positives are not in %s (e.g. %s)", len(missing), run_path,
                    ", ".join(missing[:EXAMPLES]))
    if not triples:
        raise ValueError(f"no triples could be mined from {run_path} and {qrels_path}")
    count = write_triples(out_path, triples)
    if manifest_path is not None:
        # queries_with_positives = queries_mined + queries_without_negatives + queries_missing_from_run
        manifest = {
            "run": str(run_path), "source": source, "qrels": str(qrels_path), "triples_file": str(out_path),
            "depth": depth, "per_positive": per_positive, "seed": seed,
            "negatives": f"the run's top {depth} minus the query's judged positives (relevance > 0)",
            "counts": {
                "judged_queries": len(qrels),
                "queries_with_positives": len(positives),
                "positives": sum(len(pids) for pids in positives.values()),
                "run_queries": len(run_qids),
                "queries_mined": len({qid for qid, _, _ in triples}),
                "queries_without_negatives": len(without_negatives),
                "queries_missing_from_run": len(missing),
                "positives_short_of_negatives": short,  # given fewer than per_positive negatives
                "triples": count,
            },
            "examples": {"queries_without_negatives": without_negatives[:EXAMPLES],
                         "queries_missing_from_run": missing[:EXAMPLES]},
        }
        with atomic_output(manifest_path) as out:
            json.dump(manifest, out, indent=2)
            out.write("\n")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="TREC run over the train queries to mine")
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="triples to write (qid<TAB>pos<TAB>neg)")
    parser.add_argument("--depth", type=int, default=200, help="candidates: the run's top DEPTH hits per query")
    parser.add_argument("--per-positive", type=int, default=4, help="negatives sampled per (query, positive)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--manifest", type=Path, default=None, help="JSON record of the run, settings and counts")
    parser.add_argument("--source", default=None, help="label of the run's model for the manifest, e.g. tct_inbatch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    count = mine_negatives(args.run, args.qrels, args.out, depth=args.depth, per_positive=args.per_positive,
                           seed=args.seed, manifest_path=args.manifest, source=args.source)
    log.info("wrote %d triples to %s", count, args.out)


if __name__ == "__main__":
    run_stage(main)
