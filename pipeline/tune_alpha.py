"""tune_alpha: grid search of Eq. 7's alpha on sampled training queries, for one measure (the paper: MRR@10).

    python -m pipeline.tune_alpha --sparse results/D/runs/bm25.tune.trec --dense results/D/runs/tct_inbatch.tune.trec \
        --qrels resources/D/qrels.tune.txt --curve results/D/fusion/tct_inbatch+bm25.alpha.tsv \
        --choice results/D/fusion/tct_inbatch+bm25.alpha.json --start 0 --stop 2 --step 0.01 --measure RR@10

The runs are aligned once. For RR@k each alpha then costs a few array operations: the rank of a
relevant passage is 1 + the candidates scoring higher + the equal-scoring ones trec_eval would put
first (larger docid), so no per-alpha sort is needed. Any other measure (nDCG@10 on a BEIR-style
dataset) ranks each alpha's fused candidates in trec_eval's order and scores them with
pipeline.evaluate. Ties between alphas go to the smallest.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import ir_measures
import numpy as np

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.evaluate import MEAN_ROW, score_run
from pipeline.formats import read_qrels
from pipeline.fusion import layout, weighted_scores
from pipeline.run_arrays import RunArrays, docid_codes, encode_runs, read_run_frame

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    """Both runs on fusion's (query, candidate) grid, their scores kept apart so that each alpha is one sum:
    each row's docid codes ascend; `valid` marks one cell per distinct docid."""

    qids: list[str]
    codes: np.ndarray  # (Q, C) int64
    sparse: np.ndarray  # (Q, C) float64, missing filled per Eq. 7
    dense: np.ndarray
    valid: np.ndarray  # (Q, C) bool
    vocabulary: np.ndarray  # sorted docids: codes index it


def align(sparse: RunArrays, dense: RunArrays, vocabulary: np.ndarray, normalization: bool = False) -> Candidates:
    """Lay out the union of candidates of every query, missing scores filled with the run's minimum."""
    grid = layout(sparse, dense, vocabulary)
    return Candidates(grid.qids, grid.codes, weighted_scores(grid, sparse, dense, (1.0, 0.0), normalization),
                      weighted_scores(grid, sparse, dense, (0.0, 1.0), normalization), grid.valid, vocabulary)


def combine(candidates: Candidates, alpha: float, weight_on_dense: bool = False) -> np.ndarray:
    """Fused scores (Q, C); -inf outside the valid cells."""
    if weight_on_dense:
        scores = candidates.sparse + alpha * candidates.dense
    else:
        scores = alpha * candidates.sparse + candidates.dense
    np.putmask(scores, ~candidates.valid, -np.inf)
    return scores


def reciprocal_ranks(candidates, scores: np.ndarray, relevant: tuple[np.ndarray, np.ndarray],
                     cutoff: int) -> np.ndarray:
    """RR@cutoff per candidate row (trec_eval tie order), from the (row, column) cells judged relevant."""
    rows, cols = relevant
    best = np.full(len(candidates.qids), np.inf)
    if len(rows):
        row_scores = scores[rows]
        own = scores[rows, cols][:, None]
        later_docid = candidates.codes[rows] > candidates.codes[rows, cols][:, None]
        ahead = (row_scores > own) | ((row_scores == own) & later_docid)
        np.minimum.at(best, rows, 1 + ahead.sum(axis=1))
    return np.where(best <= cutoff, 1.0 / best, 0.0)


def rr_curve(candidates: Candidates, qrels: dict, alphas: np.ndarray, cutoff: int,
             weight_on_dense: bool = False) -> list[float]:
    """Mean RR@cutoff over the qrels' queries for each alpha, without sorting."""
    mask = np.zeros_like(candidates.valid)
    for row, qid in enumerate(candidates.qids):
        codes = docid_codes(candidates.vocabulary, [d for d, rel in qrels.get(qid, {}).items() if rel > 0])
        if len(codes):  # judged relevant passages that either run retrieved
            mask[row] = np.isin(candidates.codes[row], codes) & candidates.valid[row]
    relevant = np.nonzero(mask)
    in_qrels = np.array([qid in qrels for qid in candidates.qids])
    curve = []
    for alpha in alphas:
        rr = reciprocal_ranks(candidates, combine(candidates, float(alpha), weight_on_dense), relevant, cutoff)
        curve.append(float(rr[in_qrels].sum() / max(len(qrels), 1)))  # absent queries count 0 (trec_eval -c)
    return curve


def measure_curve(candidates: Candidates, qrels: dict, alphas: np.ndarray, measure: str, cutoff: int | None,
                  weight_on_dense: bool = False) -> list[float]:
    """The mean of `measure` over the qrels' queries for each alpha: the fused candidates ranked as trec_eval
    ranks them (score, then larger docid), the top `cutoff` scored by pipeline.evaluate."""
    depth = candidates.codes.shape[1] if cutoff is None else min(cutoff, candidates.codes.shape[1])
    docids = candidates.vocabulary[np.where(candidates.valid, candidates.codes, 0)]  # padding cells hold no code
    curve = []
    for alpha in alphas:
        scores = combine(candidates, float(alpha), weight_on_dense)
        order = np.lexsort((-candidates.codes, -scores), axis=-1)[:, :depth]
        run = {qid: {str(docids[row, col]): float(scores[row, col]) for col in order[row]
                     if candidates.valid[row, col]} for row, qid in enumerate(candidates.qids)}
        curve.append(score_run(run, qrels, [measure])[MEAN_ROW][measure])
    return curve


def tune_alpha(sparse_path: Path, dense_path: Path, qrels_path: Path, curve_path: Path, choice_path: Path,
               start: float = 0.0, stop: float = 2.0, step: float = 0.01, measure: str = "RR@10",
               normalization: bool = False, weight_on_dense: bool = False) -> dict:
    """Sweep alpha over [start, stop] by `step` for `measure` (an ir_measures name); write the curve and the
    chosen alpha; return the choice."""
    parsed = ir_measures.parse_measure(measure)
    cutoff = parsed.params.get("cutoff")
    qrels = read_qrels(qrels_path)
    candidates = align(*encode_runs(read_run_frame(sparse_path), read_run_frame(dense_path)), normalization)
    alphas = np.round(np.arange(start, stop + step / 2, step), 10)
    started = time.perf_counter()
    if parsed.NAME == "RR" and parsed.params.get("rel") in (None, 1):
        curve = rr_curve(candidates, qrels, alphas, cutoff or candidates.codes.shape[1], weight_on_dense)
    else:
        curve = measure_curve(candidates, qrels, alphas, measure, cutoff, weight_on_dense)
    seconds = time.perf_counter() - started
    best = int(np.argmax(curve))
    choice = {"alpha": float(alphas[best]), "measure": measure, measure: curve[best], "queries": len(qrels),
              "grid": [start, stop, step], "sweep_seconds": round(seconds, 3),
              "normalization": normalization, "weight_on_dense": weight_on_dense}
    write_sweep(curve_path, choice_path, "alpha", [f"{a:.4f}" for a in alphas], curve, choice)
    return choice


def write_sweep(curve_path: Path, choice_path: Path, parameter: str, values: list[str], curve: list[float],
                choice: dict) -> None:
    """A tuning sweep's curve (`parameter` TAB the measure, a line per value tried) and its choice (JSON)."""
    with atomic_output(curve_path) as out:
        out.write(f"{parameter}\t{choice['measure']}\n")
        out.writelines(f"{value}\t{score:.6f}\n" for value, score in zip(values, curve, strict=True))
    with atomic_output(choice_path) as out:
        json.dump(choice, out, indent=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparse", type=Path, required=True)
    parser.add_argument("--dense", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--curve", type=Path, required=True)
    parser.add_argument("--choice", type=Path, required=True)
    parser.add_argument("--start", type=float, default=0.0)
    parser.add_argument("--stop", type=float, default=2.0)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--measure", default="RR@10", help="ir_measures name: RR@10 (the paper), nDCG@10, R@100, ...")
    parser.add_argument("--normalization", action="store_true")
    parser.add_argument("--weight-on-dense", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    choice = tune_alpha(args.sparse, args.dense, args.qrels, args.curve, args.choice, args.start, args.stop, args.step,
                        args.measure, args.normalization, args.weight_on_dense)
    log.info("alpha %.3f (%s %.4f over %d queries; sweep %.1f s)", choice["alpha"], args.measure,
             choice[args.measure], choice["queries"], choice["sweep_seconds"])


if __name__ == "__main__":
    run_stage(main)
