"""fuse: the paper's hybrid (Eq. 7) of a sparse and a dense run, vectorised over all queries.

    python -m pipeline.fusion --sparse results/D/runs/bm25.dev.trec --dense results/D/runs/tct_inbatch.dev.trec \
        --alpha 0.10 --run results/D/runs/tct_inbatch+bm25.dev.trec

Per query the candidates are the union of both runs; a passage missing from one run takes that
run's minimum score for the query (0 when the query has no hits there, as pyserini does);
score = alpha * sparse + dense, with no normalisation by default. pyserini's options are kept:
min-max centring (`normalization`) and alpha on the dense side (`weight_on_dense`). Equal scores
are ordered by docid, descending, the order trec_eval itself uses. The runs are laid out once as
(queries x candidates) matrices, so fusing, or sweeping alpha, is a few array operations.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import run_stage
from pipeline.io import InputFormatError, Run, atomic_output, write_run
from pipeline.timing import cpu_name, time_each

log = logging.getLogger(__name__)


@dataclass
class Candidates:
    """Both runs on a common (query, candidate) grid; padding cells are invalid."""

    qids: list[str]
    docids: np.ndarray  # (Q, C) object: docid strings ("" in padding)
    order: np.ndarray  # (Q, C) int: rank of the docid in sorted order of all docids (tie-breaking)
    sparse: np.ndarray  # (Q, C) float64, missing filled per Eq. 7
    dense: np.ndarray
    valid: np.ndarray  # (Q, C) bool


def run_frame(run: Run) -> pd.DataFrame:
    """A run as columns qid, docid, score."""
    rows = [(qid, docid, score) for qid, hits in run.items() for docid, score in hits.items()]
    return pd.DataFrame(rows, columns=["qid", "docid", "score"]).astype({"qid": str, "docid": str, "score": float})


def read_run_frame(path: Path) -> pd.DataFrame:
    """A TREC run file straight into columns (C parser; same checks on shape as pipeline.io.read_run)."""
    frame = pd.read_csv(path, sep=r"\s+", header=None, names=["qid", "q0", "docid", "rank", "score", "tag"],
                        dtype={"qid": str, "docid": str}, engine="c")
    if frame[["qid", "docid", "score"]].isna().any().any():
        raise InputFormatError(path, None, "6 fields 'qid Q0 docid rank score tag' on every line")
    if frame.duplicated(["qid", "docid"]).any():
        raise InputFormatError(path, None, "each docid once per query")
    return frame[["qid", "docid", "score"]].astype({"score": float})


def align(sparse: pd.DataFrame, dense: pd.DataFrame, normalization: bool = False) -> Candidates:
    """Lay out the union of candidates of every query, missing scores filled with the run's minimum."""
    merged = sparse.merge(dense, on=["qid", "docid"], how="outer", suffixes=("_sparse", "_dense"), sort=False)
    qids = list(dict.fromkeys([*sparse["qid"], *dense["qid"]]))
    rows = merged["qid"].map({q: i for i, q in enumerate(qids)}).to_numpy(dtype=np.int64)
    cols = merged.groupby(rows).cumcount().to_numpy(dtype=np.int64)
    width = int(cols.max()) + 1 if len(cols) else 0
    valid = np.zeros((len(qids), width), dtype=bool)
    valid[rows, cols] = True
    docids = np.full((len(qids), width), "", dtype=object)
    docids[rows, cols] = merged["docid"].to_numpy()
    matrices = []
    for side, frame in (("sparse", sparse), ("dense", dense)):
        stats = frame.groupby("qid")["score"].agg(["min", "max"])
        # A query with no hits on this side: pyserini takes 0 as its minimum and 1 as its maximum.
        lowest = merged["qid"].map(stats["min"]).fillna(0.0).to_numpy()
        highest = merged["qid"].map(stats["max"]).fillna(1.0).to_numpy()
        values = merged[f"score_{side}"].fillna(pd.Series(lowest, index=merged.index)).to_numpy()
        if normalization:
            spread = highest - lowest
            values = (values - (lowest + highest) / 2) / np.where(spread == 0, 1.0, spread)
        matrix = np.zeros((len(qids), width))
        matrix[rows, cols] = values
        matrices.append(matrix)
    codes = np.zeros((len(qids), width), dtype=np.int64)
    if len(merged):
        codes[rows, cols] = np.unique(merged["docid"].to_numpy().astype(str), return_inverse=True)[1]
    return Candidates(qids, docids, codes, matrices[0], matrices[1], valid)


def combine(candidates: Candidates, alpha: float, weight_on_dense: bool = False) -> np.ndarray:
    """Fused scores (Q, C); -inf in padding."""
    if weight_on_dense:
        scores = candidates.sparse + alpha * candidates.dense
    else:
        scores = alpha * candidates.sparse + candidates.dense
    return np.where(candidates.valid, scores, -np.inf)


def ranking(candidates: Candidates, scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's top k: by score, then docid descending."""
    return np.lexsort((-candidates.order, -scores), axis=-1)[:, :k]


def fuse(sparse: Run | pd.DataFrame, dense: Run | pd.DataFrame, alpha: float, k: int = 1000,
         normalization: bool = False, weight_on_dense: bool = False) -> dict[str, list[tuple[str, float]]]:
    """Eq. 7 for every query; {qid: [(docid, score), ...]} in rank order, at most k each."""
    sparse = sparse if isinstance(sparse, pd.DataFrame) else run_frame(sparse)
    dense = dense if isinstance(dense, pd.DataFrame) else run_frame(dense)
    candidates = align(sparse, dense, normalization)
    if not candidates.qids:
        return {}
    scores = combine(candidates, alpha, weight_on_dense)
    top = ranking(candidates, scores, k)
    kept = np.take_along_axis(candidates.valid, top, axis=1)
    ranked_ids = np.take_along_axis(candidates.docids, top, axis=1)
    ranked_scores = np.take_along_axis(scores, top, axis=1)
    return {qid: list(zip(ranked_ids[row][kept[row]], ranked_scores[row][kept[row]].tolist(), strict=True))
            for row, qid in enumerate(candidates.qids)}


def fuse_runs(sparse_path: Path, dense_path: Path, run_path: Path, alpha: float, k: int = 1000,
              normalization: bool = False, weight_on_dense: bool = False, latency_queries: int = 200,
              tag: str = "hybrid") -> dict:
    """Fuse two run files into a third; beside it, the fusion latency and the hybrid's latency."""
    sparse, dense = read_run_frame(sparse_path), read_run_frame(dense_path)
    fused = fuse(sparse, dense, alpha, k, normalization, weight_on_dense)
    write_run(run_path, fused, tag)
    # Latency per query as a served system sees it: one query's two hit lists at a time.
    by_query = {side: dict(tuple(frame.groupby("qid"))) for side, frame in (("sparse", sparse), ("dense", dense))}
    empty = sparse.iloc[:0]
    timing = time_each(list(fused)[:latency_queries], lambda q: fuse(
        by_query["sparse"].get(q, empty), by_query["dense"].get(q, empty), alpha, k, normalization, weight_on_dense))
    stages = {}
    for name, path in (("sparse", sparse_path), ("dense", dense_path)):
        latency_file = Path(path).with_suffix(".latency.json")
        stages[name] = json.loads(latency_file.read_text()).get("latency_ms_median") if latency_file.exists() else None
    record = {"alpha": alpha, "queries": len(fused), "device": cpu_name(), "latency_threads": 1,
              "latency_queries": timing["latency_queries"], "fusion_ms_median": timing["latency_ms_median"],
              "fusion_ms_p95": timing["latency_ms_p95"], "sparse_ms_median": stages["sparse"],
              "dense_ms_median": stages["dense"]}
    if None not in stages.values() and timing["latency_ms_median"] is not None:
        # The paper runs both retrievers in parallel: max of the two, plus fusion.
        record["latency_ms_median"] = round(max(stages.values()) + timing["latency_ms_median"], 3)
        record["sequential_ms_median"] = round(sum(stages.values()) + timing["latency_ms_median"], 3)
    with atomic_output(Path(run_path).with_suffix(".latency.json")) as out:
        json.dump(record, out, indent=2)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sparse", type=Path, required=True)
    parser.add_argument("--dense", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    alpha = parser.add_mutually_exclusive_group(required=True)
    alpha.add_argument("--alpha", type=float)
    alpha.add_argument("--alpha-file", type=Path, help="JSON with 'alpha' (written by pipeline.tune_alpha)")
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--normalization", action="store_true")
    parser.add_argument("--weight-on-dense", action="store_true")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--tag", default="hybrid")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    value = args.alpha if args.alpha is not None else json.loads(args.alpha_file.read_text())["alpha"]
    record = fuse_runs(args.sparse, args.dense, args.run, value, args.hits, args.normalization, args.weight_on_dense,
                       args.latency_queries, args.tag)
    log.info("fused %d queries with alpha %.3f; fusion %s ms/query", record["queries"], value,
             record["fusion_ms_median"])


if __name__ == "__main__":
    run_stage(main)
