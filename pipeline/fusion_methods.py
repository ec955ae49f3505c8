"""fusion_methods: hybrids by the fusion methods of trectools beside Eq. 7 (pipeline.fusion): reciprocal rank
fusion, rank-biased precision fusion, CombSUM, CombMNZ and Borda count, as array code on Eq. 7's layout.

    python -m pipeline.fusion_methods fuse --method rrf rbp --sparse results/D/runs/bm25.dev.trec \
        --dense results/D/runs/tct_inbatch.dev.trec --param-file results/D/fusion/tct_inbatch+bm25.rrf.json \
        results/D/fusion/tct_inbatch+bm25.rbp.json --run results/D/runs/rrf.dev.trec results/D/runs/rbp.dev.trec
    python -m pipeline.fusion_methods tune --method rrf rbp --sparse results/D/runs/bm25.tune.trec \
        --dense results/D/runs/tct_inbatch.tune.trec --qrels resources/D/qrels.tune.txt --measure RR@10 \
        --choice rrf.json rbp.json --curve rrf.tsv rbp.tsv

Every method scores a document by the sum, over the two runs, of what its hit in each run weighs (a document's
rank r is its place in trec_eval's order of its run: score, then docid descending):
- rrf (trectools' reciprocal_rank_fusion): 1 / (k + r); k defaults to 60 (Cormack et al.).
- rbp (trectools' rank_biased_precision_fusion): (1 - p) * p ** (r - 1); p defaults to 0.8.
- combsum / combmnz (trectools' combos "sum" / "mnz"): the run's score, min-max normalised per query and run,
  (s - min) / (max - min), 1 when all are equal (trectools normalises nothing); MNZ doubles the sum of a document
  both runs hold.
- borda: trectools 0.0.50's borda_count is a stub that cites Aslam & Montague (2001), which this follows as combos
  "sum" over Borda points: with c distinct candidates for the query, a run gives c - r + 1 points at rank r and
  shares the remaining points evenly among the candidates it lacks, (c - n + 1) / 2 each for a run of n hits.
rrf and rbp read each run's top 1000 per query, as trectools does. A document's two weights are added sparse
first, as trectools adds them, and the per-rank weights use trectools' own expressions, so scores are
bit-identical to trectools' (tests/test_fusion_methods.py holds trectools to that as the oracle). Equal scores are
ranked by docid descending, as pipeline.fusion ranks them (trectools: ascending). Fused runs are written with
exact scores (shortest round-trip form): 6 decimals cannot tell RBP's or RRF's scores apart below the top ranks.

Both runs are read, encoded and put in rank order once per job. Every method and every grid value of a sweep then
scores the same per-block layout of both runs (pipeline.fusion.fuse_blocks); a sweep keeps only the top `cutoff`
hits its measure reads, and the full ranking is computed by `fuse` for the chosen value alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.cli import run_stage
from pipeline.formats import InputFormatError, Run
from pipeline.fusion import Layout, RepeatedDocid, Scorer, cell_scores, fuse_blocks, side_by_side
from pipeline.run_arrays import RunArrays, encode_runs, read_run_frame, write_run_arrays

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
DEPTH = 1000  # trectools' rrf and rbp read each run's top 1000 per query (get_top_documents(topic, n=1000))


@dataclass(frozen=True)
class Method:
    """What a hit weighs ("rank": a function of its rank alone, "minmax": its normalised score, "borda": points),
    the method's parameter if it has one, and how a document both runs hold is counted."""

    hits: str
    parameter: str | None = None
    default: float | None = None  # trectools' own default
    grid: tuple[float, ...] = ()
    pair_factor: float = 1.0  # CombMNZ: the sum times the number of runs holding the document


METHODS = {
    "rrf": Method("rank", "k", 60, (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)),
    "rbp": Method("rank", "p", 0.8, (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)),
    "combsum": Method("minmax"),
    "combmnz": Method("minmax", pair_factor=2.0),
    "borda": Method("borda"),
}


def rank_weights(method: str, value: float, ranks: int) -> np.ndarray:
    """The weight of ranks 1..`ranks` by trectools' own expression (Python floats: numpy's power may differ from
    the C library's in the last bit), 0 past DEPTH."""
    if method == "rrf":
        weights = [1.0 / (value + rank) for rank in range(1, min(ranks, DEPTH) + 1)]
    else:
        weights = [(1.0 - value) * (value ** (rank - 1)) for rank in range(1, min(ranks, DEPTH) + 1)]
    return np.array(weights + [0.0] * max(ranks - DEPTH, 0))


def side_rows(grid: Layout, run: RunArrays) -> np.ndarray:
    """The layout's row of each of a block run's queries."""
    if grid.rectangular:
        return np.arange(len(grid.qids))
    row_of = {qid: row for row, qid in enumerate(grid.qids)}
    return np.array([row_of[qid] for qid in run.qids], dtype=np.int64)


def method_scorer(method: str, value: float | None) -> Scorer:
    """The layout scores of `method` at parameter `value` (its default when None). The runs it is given must list
    each query's hits in rank order (RunArrays.in_rank_order): a hit's column in the layout is then its rank - 1."""
    spec = METHODS[method]
    if spec.parameter is None and value is not None:
        raise ValueError(f"{method} takes no parameter (got {value})")
    value = spec.default if value is None else value
    sides = (0, 1)

    def score(grid: Layout, sparse: RunArrays, dense: RunArrays) -> np.ndarray:
        columns = (slice(0, grid.widths[0]), slice(grid.widths[0], None))
        if spec.hits == "rank":
            weights = rank_weights(method, value, max(grid.widths))
            hits = np.tile(np.concatenate([weights[:grid.widths[0]], weights[:grid.widths[1]]]), (len(grid.qids), 1))
            scores = cell_scores(grid, hits)
            if max(grid.widths) > DEPTH:  # a docid that every run holding it ranks past DEPTH is no candidate
                within = np.tile(np.concatenate([np.arange(width) < DEPTH for width in grid.widths]),
                                 (len(grid.qids), 1)).astype(np.float64)
                scores[cell_scores(grid, within) == 0] = -np.inf
            return scores
        if spec.hits == "minmax":
            hits = side_by_side(grid, sparse, dense)
            for side in sides:
                low, high = grid.lowest[side], grid.highest[side]
                spread = high - low
                hits[:, columns[side]] = np.where(spread > 0, (hits[:, columns[side]] - low)
                                                  / np.where(spread > 0, spread, 1.0), 1.0)
            return cell_scores(grid, hits, pair_factor=spec.pair_factor)
        # Borda: c - r + 1 points at rank r; (c - n + 1) / 2 for each candidate a run of n hits lacks.
        candidates = grid.candidates().astype(np.float64)[:, None]
        hits = np.empty((len(grid.qids), sum(grid.widths)))
        shared = []
        for side, run in zip(sides, (sparse, dense), strict=True):
            hits[:, columns[side]] = candidates - np.arange(grid.widths[side])
            lengths = np.zeros(len(grid.qids))
            lengths[side_rows(grid, run)] = np.diff(run.offsets)
            shared.append((candidates - lengths[:, None] + 1) / 2)
        return cell_scores(grid, hits, (shared[0], shared[1]))

    return score


@dataclass
class Inputs:
    """Both runs of a job, encoded over one sorted docid vocabulary, each query's hits in rank order."""

    sparse: RunArrays
    dense: RunArrays
    vocabulary: np.ndarray
    paths: tuple[Path | str, Path | str] = ("sparse run", "dense run")  # what an error names


def encoded_inputs(sparse: pd.DataFrame, dense: pd.DataFrame,
                   paths: tuple[Path | str, Path | str] = ("sparse run", "dense run")) -> Inputs:
    """Both runs (columns qid, docid, score) encoded and put in rank order, once for every method and grid value."""
    sparse_run, dense_run, vocabulary = encode_runs(sparse, dense)
    return Inputs(sparse_run.in_rank_order(), dense_run.in_rank_order(), vocabulary, paths)


def read_inputs(sparse: Path, dense: Path) -> Inputs:
    """Both run files, read and encoded once for a job."""
    return encoded_inputs(read_run_frame(sparse), read_run_frame(dense), (sparse, dense))


def fuse_inputs(inputs: Inputs, settings: list[tuple[str, float | None]], hits: int = 1000) -> list[RunArrays]:
    """The fused top `hits` of every query for each (method, parameter value) of `settings`, one pass over the
    runs; a docid listed twice for a query is refused naming its run."""
    try:
        return fuse_blocks(inputs.sparse, inputs.dense, inputs.vocabulary, hits,
                           [method_scorer(method, value) for method, value in settings])
    except RepeatedDocid as err:
        raise InputFormatError(inputs.paths[err.side], None, "each docid once per query", str(err)) from None


def fuse_frames(sparse: pd.DataFrame, dense: pd.DataFrame, method: str, param: float | None = None,
                hits: int = 1000) -> list[tuple[str, str, float]]:
    """One method over two runs held as frames (columns qid, docid, score): (qid, docid, score) in rank order."""
    inputs = encoded_inputs(sparse, dense)
    fused = fuse_inputs(inputs, [(method, param)], hits)[0]
    qids = np.repeat(fused.qids, np.diff(fused.offsets)).tolist()
    return list(zip(qids, inputs.vocabulary[fused.docids].tolist(), fused.scores.tolist(), strict=True))


def as_run(fused: RunArrays, vocabulary: np.ndarray) -> Run:
    """RunArrays as pipeline.evaluate's {qid: {docid: score}}."""
    docids = vocabulary[fused.docids].tolist()
    scores = fused.scores.tolist()
    return {qid: dict(zip(docids[lo:hi], scores[lo:hi], strict=True))
            for qid, lo, hi in zip(fused.qids, fused.offsets[:-1], fused.offsets[1:], strict=True)}


def sweep(inputs: Inputs, qrels: dict, measure: str, grids: dict[str, tuple[float, ...]],
          hits: int = 1000) -> dict[str, list[float]]:
    """The mean of `measure` (an ir_measures name, trec_eval's semantics through pipeline.evaluate) at every value
    of each method's grid, all from one pass over the runs; each value keeps only the top the measure reads."""
    import ir_measures  # here, not at the top: the workflow imports METHODS when it parses its rules

    from pipeline.evaluate import MEAN_ROW, score_run

    cutoff = ir_measures.parse_measure(measure).params.get("cutoff")
    settings = [(method, value) for method, grid in grids.items() for value in grid]
    fused = iter(fuse_inputs(inputs, settings, min(cutoff or hits, hits)))
    return {method: [score_run(as_run(next(fused), inputs.vocabulary), qrels, [measure])[MEAN_ROW][measure]
                     for _ in grid] for method, grid in grids.items()}


def tune_methods(sparse: Path, dense: Path, qrels_path: Path, outputs: dict[str, tuple[Path, Path]],
                 measure: str = "RR@10", grid: tuple[float, ...] | None = None, hits: int = 1000) -> dict[str, dict]:
    """Grid search of each method's parameter on `measure`; `outputs` maps a method to its (curve, choice) files.
    Ties go to the first grid value. Returns the choices."""
    from pipeline.formats import read_qrels
    from pipeline.tune_alpha import write_sweep

    unknown = [method for method in outputs if METHODS[method].parameter is None]
    if unknown:
        raise ValueError(f"{unknown[0]} has no parameter to tune")
    grids = {method: tuple(grid or METHODS[method].grid) for method in outputs}
    qrels = read_qrels(qrels_path)
    inputs = read_inputs(sparse, dense)
    started = time.perf_counter()
    curves = sweep(inputs, qrels, measure, grids, hits)
    seconds = round(time.perf_counter() - started, 3)
    choices = {}
    for method, (curve_path, choice_path) in outputs.items():
        curve, values, parameter = curves[method], grids[method], METHODS[method].parameter
        best = int(np.argmax(curve))
        choices[method] = {"method": method, "parameter": parameter, "value": values[best], "measure": measure,
                           measure: curve[best], "queries": len(qrels), "grid": list(values),
                           "sweep_seconds": seconds}
        write_sweep(curve_path, choice_path, parameter, [f"{value:g}" for value in values], curve, choices[method])
    return choices


def fuse_runs(sparse: Path, dense: Path, outputs: dict[str, Path], params: dict[str, float] | None = None,
              hits: int = 1000, tag: str | None = None) -> dict[str, dict]:
    """Fuse two run files by each method of `outputs` (method -> fused run file) at its `params` value (default:
    trectools'); returns per method its parameter, the queries fused and how long fusing took."""
    params = params or {}
    inputs = read_inputs(sparse, dense)
    started = time.perf_counter()
    fused = fuse_inputs(inputs, [(method, params.get(method)) for method in outputs], hits)
    seconds = round(time.perf_counter() - started, 3)
    records = {}
    for (method, path), run in zip(outputs.items(), fused, strict=True):
        write_run_arrays(path, run, inputs.vocabulary, tag or method, exact=True)
        records[method] = {"method": method, "param": params.get(method, METHODS[method].default),
                           "queries": int((np.diff(run.offsets) > 0).sum()), "seconds": seconds}
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fuse = commands.add_parser("fuse", help="fuse a sparse and a dense run by each method named")
    tune = commands.add_parser("tune", help="grid search of rrf's k or rbp's p on the tuning queries")
    for command in (fuse, tune):
        command.add_argument("--method", nargs="+", required=True, choices=list(METHODS) if command is fuse else
                             [name for name, spec in METHODS.items() if spec.parameter])
        command.add_argument("--sparse", type=Path, required=True)
        command.add_argument("--dense", type=Path, required=True)
        command.add_argument("--hits", type=int, default=1000)
    fuse.add_argument("--run", type=Path, nargs="+", required=True, help="one per method, in the same order")
    param = fuse.add_mutually_exclusive_group()
    param.add_argument("--param", type=float, help="one method's parameter: rrf's k (default 60) or rbp's p (0.8)")
    param.add_argument("--param-file", type=Path, nargs="*", default=[],
                       help="JSON with 'method' and 'value' (written by `tune`), one per method with a parameter")
    fuse.add_argument("--tag", help="the run's tag (default: the method)")
    tune.add_argument("--qrels", type=Path, required=True)
    tune.add_argument("--measure", default="RR@10", help="ir_measures name: RR@10 (MS MARCO), nDCG@10, ...")
    tune.add_argument("--grid", type=float, nargs="+", help="values to try (default: the method's grid)")
    tune.add_argument("--curve", type=Path, nargs="+", required=True, help="one per method")
    tune.add_argument("--choice", type=Path, nargs="+", required=True, help="one per method")
    args = parser.parse_args(argv)
    outputs = [args.run] if args.command == "fuse" else [args.curve, args.choice]
    if any(len(paths) != len(args.method) for paths in outputs):
        parser.error("give one output file per --method, in the same order")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "tune":
        choices = tune_methods(args.sparse, args.dense, args.qrels, {
            method: (curve, choice) for method, curve, choice in zip(args.method, args.curve, args.choice,
                                                                     strict=True)}, args.measure, args.grid, args.hits)
        for method, choice in choices.items():
            log.info("%s: %s %g (%s %.4f over %d queries; every sweep %.1f s)", method, choice["parameter"],
                     choice["value"], args.measure, choice[args.measure], choice["queries"], choice["sweep_seconds"])
        return
    if args.param is not None and len(args.method) > 1:
        parser.error("--param sets one method's parameter: give --param-file for several")
    chosen = {args.method[0]: args.param} if args.param is not None else {}
    for path in args.param_file:
        record = json.loads(path.read_text())
        if record.get("method") not in args.method:
            raise ValueError(f"{path}: tuned for {record.get('method')!r}, not one of {args.method}")
        chosen[record["method"]] = record["value"]
    records = fuse_runs(args.sparse, args.dense, dict(zip(args.method, args.run, strict=True)), chosen, args.hits,
                        args.tag)
    for record in records.values():
        log.info("fused %d queries by %s (%s); every method %.1f s", record["queries"], record["method"],
                 record["param"], record["seconds"])


if __name__ == "__main__":
    run_stage(main)
