"""fusion_methods: hybrids by trectools' fusion module beside Eq. 7 (pipeline.fusion): reciprocal rank fusion,
rank-biased precision fusion, CombSUM, CombMNZ, and Borda count.

    python -m pipeline.fusion_methods fuse --method rrf --param 60 --sparse results/D/runs/bm25.dev.trec \
        --dense results/D/runs/tct_inbatch.dev.trec --run results/D/runs/tct_inbatch+bm25.rrf.dev.trec
    python -m pipeline.fusion_methods tune --method rrf --sparse results/D/runs/bm25.tune.trec \
        --dense results/D/runs/tct_inbatch.tune.trec --qrels resources/D/qrels.tune.txt --measure RR@10 \
        --choice results/D/fusion/tct_inbatch+bm25.rrf.json --curve results/D/fusion/tct_inbatch+bm25.rrf.tsv

What each method scores (a document's rank r is its place in trec_eval's order of its run: score, then docid
descending; a run lacking the document adds nothing unless said otherwise):
- rrf (trectools.fusion.reciprocal_rank_fusion): sum of 1 / (k + r); k defaults to 60 (Cormack et al.).
- rbp (trectools.fusion.rank_biased_precision_fusion): sum of (1 - p) * p ** (r - 1); p defaults to 0.8.
- combsum / combmnz (trectools.fusion.combos "sum" / "mnz"): the sum of the scores, times the number of runs
  holding the document for MNZ. trectools normalises nothing, so each run's scores are min-max normalised per
  query first, (s - min) / (max - min), all of them 1 when they are equal.
- borda: trectools 0.0.50's borda_count is a stub (it prints a TODO and returns None), so Borda runs as
  combos "sum" over Borda points (Aslam & Montague 2001, which that stub cites): with c distinct candidates for
  the query, a run gives c - r + 1 points at rank r and shares the remaining points evenly among the candidates
  it lacks, (c - n + 1) / 2 each for a run of n hits.
rrf and rbp read at most each run's top 1000 per query (trectools' fixed depth). The fused run keeps the top
`hits` per query, equal scores by docid descending, and is written with exact scores (%.17g): 6 decimals
cannot tell RBP's or RRF's scores apart below the top ranks, and trec_eval would reorder what they tie.

trectools fuses query by query, and each query selects its rows from the whole run it was given, so one call
on a whole run costs (queries x rows): it is given BLOCK queries at a time instead, from arrays read once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import ir_measures
import numpy as np
import pandas as pd

from pipeline.cli import run_stage
from pipeline.evaluate import MEAN_ROW, score_run
from pipeline.fusion import RepeatedDocid
from pipeline.io import InputFormatError, Run, atomic_output, read_qrels
from pipeline.run_arrays import RunArrays, encode_runs, read_run_frame
from pipeline.tune_alpha import write_sweep

if TYPE_CHECKING:
    from trectools import TrecRun

log = logging.getLogger(__name__)
BLOCK = 64  # queries per trectools call; 16 to 256 differ little (10-18 ms/query for rrf, benchmarks/README.md)
TREC_RUN_COLUMNS = ["query", "q0", "docid", "rank", "score", "system"]  # what TrecRun.load_run_from_dataframe requires


@dataclass(frozen=True)
class Method:
    """A trectools fusion: its function in trectools.fusion and fixed arguments, what it is given per run, and
    its parameter if it has one."""

    function: str
    inputs: str  # "scores": the run's own (rrf, rbp read only their order), "minmax", "borda": points
    parameter: str | None = None
    default: float | None = None  # trectools' own default
    grid: tuple[float, ...] = ()
    arguments: dict = field(default_factory=dict)

    def call(self, runs: list[TrecRun], value: float | None) -> TrecRun:
        # trectools is imported here, not at the top: it pulls in matplotlib and scikit-learn (seconds), and the
        # workflow reads METHODS when it parses its rules.
        from trectools import fusion

        named = {self.parameter: value} if self.parameter else {}
        return getattr(fusion, self.function)(runs, max_docs=ALL, **named, **self.arguments)


ALL = sys.maxsize  # max_docs for trectools: every candidate (the top `hits` are cut afterwards, ties in our order)
METHODS = {
    "rrf": Method("reciprocal_rank_fusion", "scores", "k", 60, (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)),
    "rbp": Method("rank_biased_precision_fusion", "scores", "p", 0.8,
                  (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)),
    "combsum": Method("combos", "minmax", arguments={"strategy": "sum"}),
    "combmnz": Method("combos", "minmax", arguments={"strategy": "mnz"}),
    "borda": Method("combos", "borda", arguments={"strategy": "sum"}),
}


@dataclass
class Side:
    """One run's hits grouped by query (`rows` index the union of both runs' queries, ascending), each query's
    in rank order; `values` are what trectools is given as scores."""

    rows: np.ndarray  # (N,) int64
    docids: np.ndarray  # (N,) int64 codes into the shared vocabulary
    values: np.ndarray  # (N,) float64
    ranks: np.ndarray  # (N,) int64, from 1
    offsets: np.ndarray  # (Q + 1,) int64: query q's hits are offsets[q]:offsets[q + 1]

    @staticmethod
    def ranked(rows: np.ndarray, docids: np.ndarray, values: np.ndarray, queries: int) -> Side:
        """Order hits by query, then value, then docid descending (trec_eval's order); number them per query."""
        order = np.lexsort((-docids, -values, rows))
        rows, docids, values = rows[order], docids[order], values[order]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=queries))])
        ranks = np.arange(len(rows)) - offsets[rows] + 1
        return Side(rows, docids, values, ranks, offsets)

    def trec_run(self, start: int, stop: int, name: str) -> TrecRun:
        """Queries start..stop - 1 as a trectools run, rows in rank order (rrf and rbp read that order). Queries and
        docids go as their integer codes, which trectools turns into strings: it only matches them, and they parse
        back far faster than docids are looked up in the vocabulary."""
        from trectools import TrecRun  # see Method.call

        lo, hi = self.offsets[start], self.offsets[stop]
        run = TrecRun()
        run.load_run_from_dataframe(pd.DataFrame(dict(zip(TREC_RUN_COLUMNS, (
            self.rows[lo:hi], "Q0", self.docids[lo:hi], self.ranks[lo:hi], self.values[lo:hi], name), strict=True))))
        return run


@dataclass
class Inputs:
    """Both runs ready for one method's trectools calls."""

    qids: np.ndarray  # (Q,) object: every query of either run, the sparse run's first
    vocabulary: np.ndarray  # sorted docids: codes index it
    sides: tuple[Side, Side]  # sparse, dense


def prepare(sparse: pd.DataFrame, dense: pd.DataFrame, method: str) -> Inputs:
    """Both runs (columns qid, docid, score, as read_run_frame reads them) ranked, with what `method` fuses."""
    inputs = METHODS[method].inputs
    arrays = encode_runs(sparse, dense)
    vocabulary = arrays[2]
    qids = np.asarray(list(dict.fromkeys([*arrays[0].qids, *arrays[1].qids])), dtype=object)
    row_of = {qid: row for row, qid in enumerate(qids)}
    sides = []
    for side, run in enumerate(arrays[:2]):
        rows = np.repeat(np.array([row_of[qid] for qid in run.qids], dtype=np.int64), np.diff(run.offsets))
        ranked = Side.ranked(rows, run.docids, run.scores, len(qids))
        check_once(ranked, side, qids, vocabulary)
        if inputs == "minmax":
            high, low = ranked.values[ranked.offsets[ranked.rows]], ranked.values[ranked.offsets[ranked.rows + 1] - 1]
            spread = high - low
            ranked.values = np.where(spread > 0, (ranked.values - low) / np.where(spread > 0, spread, 1.0), 1.0)
        sides.append(ranked)
    if inputs == "borda":
        sides = borda_points(sides, len(qids), len(vocabulary))
    return Inputs(qids, vocabulary, tuple(sides))


def check_once(side: Side, which: int, qids: np.ndarray, vocabulary: np.ndarray) -> None:
    """Refuse a run listing a docid twice for a query (trectools would, naming only a line of its own frame)."""
    keys = np.sort(side.rows * len(vocabulary) + side.docids)
    repeated = np.flatnonzero(keys[1:] == keys[:-1])
    if len(repeated):
        row, code = divmod(int(keys[repeated[0]]), len(vocabulary))
        raise RepeatedDocid(which, str(vocabulary[code]), str(qids[row]))


def borda_points(sides: list[Side], queries: int, vocabulary_size: int) -> list[Side]:
    """Each run's Borda points over the query's c candidates: c - r + 1 at rank r, and (c - n + 1) / 2 for each
    candidate the run's n hits lack (added as hits, so that trectools' CombSUM adds them)."""
    keys = [side.rows * vocabulary_size + side.docids for side in sides]
    union = np.unique(np.concatenate(keys))
    candidates = np.bincount(union // vocabulary_size, minlength=queries)
    pointed = []
    for side, side_keys in zip(sides, keys, strict=True):
        missing = np.setdiff1d(union, side_keys, assume_unique=True)
        rows = missing // vocabulary_size
        shared = (candidates - np.diff(side.offsets) + 1) / 2
        pointed.append(Side.ranked(np.concatenate([side.rows, rows]),
                                   np.concatenate([side.docids, missing % vocabulary_size]),
                                   np.concatenate([candidates[side.rows] - side.ranks + 1, shared[rows]]), queries))
    return pointed


def fuse_inputs(inputs: Inputs, method: str, param: float | None = None, hits: int = 1000,
                block: int = BLOCK) -> RunArrays:
    """The fused top `hits` of every query (codes into inputs.vocabulary), by trectools `block` queries at a time;
    equal scores by docid descending."""
    spec = METHODS[method]
    if spec.parameter is None and param is not None:
        raise ValueError(f"{method} takes no parameter (got {param})")
    value = spec.default if param is None else param
    rows, docids, scores = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]  # none without queries
    for start in range(0, len(inputs.qids), block):
        stop = min(start + block, len(inputs.qids))
        runs = [side.trec_run(start, stop, name) for side, name in zip(inputs.sides, ("sparse", "dense"), strict=True)]
        fused = spec.call(runs, value).run_data
        rows.append(fused["query"].astype(np.int64).to_numpy())
        docids.append(fused["docid"].astype(np.int64).to_numpy())
        scores.append(fused["score"].to_numpy(dtype=np.float64))
    ranked = Side.ranked(*(np.concatenate(parts) for parts in (rows, docids, scores)), len(inputs.qids))
    kept = ranked.ranks <= hits
    offsets = np.concatenate([[0], np.cumsum(np.bincount(ranked.rows[kept], minlength=len(inputs.qids)))])
    return RunArrays(inputs.qids, offsets, ranked.docids[kept], ranked.values[kept])


def fused_frame(fused: RunArrays, vocabulary: np.ndarray) -> pd.DataFrame:
    """A fused run as columns qid, docid, score, in rank order."""
    return pd.DataFrame({"qid": np.repeat(fused.qids, np.diff(fused.offsets)), "docid": vocabulary[fused.docids],
                         "score": fused.scores})


def fuse_frames(sparse: pd.DataFrame, dense: pd.DataFrame, method: str, param: float | None = None,
                hits: int = 1000) -> pd.DataFrame:
    """Fuse two runs held as frames (qid, docid, score); the fused run in rank order, in the same columns."""
    inputs = prepare(sparse, dense, method)
    return fused_frame(fuse_inputs(inputs, method, param, hits), inputs.vocabulary)


Frames = tuple[pd.DataFrame, pd.DataFrame]


def read_inputs(sparse_path: Path, dense_path: Path, method: str, frames: Frames | None = None) -> Inputs:
    """prepare() for two run files (or `frames`, the two already read from them); a docid listed twice for a
    query is refused naming its file."""
    try:
        return prepare(*(frames or (read_run_frame(sparse_path), read_run_frame(dense_path))), method)
    except RepeatedDocid as err:
        raise InputFormatError((sparse_path, dense_path)[err.side], None, "each docid once per query",
                               str(err)) from None


def fuse_runs(sparse_path: Path, dense_path: Path, run_path: Path, method: str, param: float | None = None,
              hits: int = 1000, tag: str | None = None, frames: Frames | None = None) -> dict:
    """Fuse two run files into a third (exact scores); returns what was done and how long fusing took. `frames`:
    both runs as read_run_frame read them, when several methods fuse them."""
    started = time.perf_counter()
    inputs = read_inputs(sparse_path, dense_path, method, frames)
    fused = fuse_inputs(inputs, method, param, hits)
    seconds = time.perf_counter() - started
    lengths = np.diff(fused.offsets)
    frame = fused_frame(fused, inputs.vocabulary)
    frame.insert(1, "q0", "Q0")
    frame.insert(3, "rank", np.arange(len(frame)) - np.repeat(fused.offsets[:-1], lengths) + 1)
    frame["tag"] = tag or method
    with atomic_output(run_path) as out:
        frame.to_csv(out, sep=" ", header=False, index=False, float_format="%.17g", lineterminator="\n")
    return {"method": method, "param": METHODS[method].default if param is None else param,
            "queries": int((lengths > 0).sum()), "seconds": round(seconds, 3)}


def as_run(fused: RunArrays, vocabulary: np.ndarray) -> Run:
    """RunArrays as pipeline.evaluate's {qid: {docid: score}}."""
    docids = vocabulary[fused.docids].tolist()
    scores = fused.scores.tolist()
    return {qid: dict(zip(docids[lo:hi], scores[lo:hi], strict=True))
            for qid, lo, hi in zip(fused.qids, fused.offsets[:-1], fused.offsets[1:], strict=True)}


def tune_method(sparse_path: Path, dense_path: Path, qrels_path: Path, method: str, curve_path: Path,
                choice_path: Path, measure: str = "RR@10", grid: tuple[float, ...] | None = None,
                hits: int = 1000, frames: Frames | None = None) -> dict:
    """Score `method` at each value of its parameter's grid on `measure` (an ir_measures name, trec_eval's
    semantics through pipeline.evaluate); write the curve and the choice (ties go to the first grid value)."""
    spec = METHODS[method]
    if spec.parameter is None:
        raise ValueError(f"{method} has no parameter to tune")
    grid = tuple(grid or spec.grid)
    cutoff = ir_measures.parse_measure(measure).params.get("cutoff")
    depth = min(cutoff or hits, hits)  # the measure sees no further than its cutoff: keep no more
    qrels = read_qrels(qrels_path)
    inputs = read_inputs(sparse_path, dense_path, method, frames)
    started = time.perf_counter()
    curve = [score_run(as_run(fuse_inputs(inputs, method, value, depth), inputs.vocabulary), qrels,
                       [measure])[MEAN_ROW][measure] for value in grid]
    seconds = time.perf_counter() - started
    best = int(np.argmax(curve))
    choice = {"method": method, "parameter": spec.parameter, "value": grid[best], "measure": measure,
              measure: curve[best], "queries": len(qrels), "grid": list(grid), "sweep_seconds": round(seconds, 3)}
    write_sweep(curve_path, choice_path, spec.parameter, [f"{value:g}" for value in grid], curve, choice)
    return choice


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
    frames = read_run_frame(args.sparse), read_run_frame(args.dense)  # once, for every method
    if args.command == "tune":
        for method, curve, choice_path in zip(args.method, args.curve, args.choice, strict=True):
            choice = tune_method(args.sparse, args.dense, args.qrels, method, curve, choice_path, args.measure,
                                 args.grid, args.hits, frames)
            log.info("%s: %s %g (%s %.4f over %d queries; sweep %.1f s)", method, choice["parameter"],
                     choice["value"], args.measure, choice[args.measure], choice["queries"], choice["sweep_seconds"])
        return
    if args.param is not None and len(args.method) > 1:
        parser.error("--param sets one method's parameter: give --param-file for several")
    chosen = {}
    for path in args.param_file:
        record = json.loads(path.read_text())
        if record.get("method") not in args.method:
            raise ValueError(f"{path}: tuned for {record.get('method')!r}, not one of {args.method}")
        chosen[record["method"]] = record["value"]
    for method, run in zip(args.method, args.run, strict=True):
        record = fuse_runs(args.sparse, args.dense, run, method, chosen.get(method, args.param), args.hits, args.tag,
                           frames)
        log.info("fused %d queries by %s (%s) in %.1f s", record["queries"], method,
                 record["param"], record["seconds"])


if __name__ == "__main__":
    run_stage(main)
