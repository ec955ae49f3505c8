"""fuse: the paper's hybrid (Eq. 7) of a sparse and a dense run, vectorised over all queries.

    python -m pipeline.fusion --sparse results/D/runs/bm25.dev.trec --dense results/D/runs/tct_inbatch.dev.trec \
        --alpha 0.10 --run results/D/runs/tct_inbatch+bm25.dev.trec

Per query the candidates are the union of both runs; a passage missing from one run takes that
run's minimum score for the query (0 when the query has no hits there, as pyserini does);
score = alpha * sparse + dense, with no normalisation by default. pyserini's options are kept:
min-max centring (`normalization`) and alpha on the dense side (`weight_on_dense`). Equal scores
are ordered by docid, descending, the order trec_eval itself uses.

Both runs are read once into arrays over one sorted docid vocabulary, so a docid is an integer
whose order is the docids' string order. Fusing is then a handful of row-wise array operations on a
(queries x candidates) grid: sort each row's docids to find the union, fill, add, sort by score.
This grid kernel, which tune_alpha and fuse_methods use too, is kept in one module, over the 350 lines the
others keep to: its layout, its scores and its ranking are one algorithm, read together.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, Run
from pipeline.run_arrays import RunArrays, encode_runs, read_run_frame, run_frame, write_run_arrays
from pipeline.timing import cpu_name, time_each

log = logging.getLogger(__name__)
PADDING = np.iinfo(np.int64).max  # a docid code above every real one: padding sorts last
BLOCK = 32  # queries fused together


class RepeatedDocid(ValueError):
    """A run lists a docid twice for one query (side 0: sparse, 1: dense)."""

    def __init__(self, side: int, docid: str, qid: str):
        self.side = side
        super().__init__(f"the {('sparse', 'dense')[side]} run lists docid {docid} twice for query {qid}")


@dataclass
class Layout:
    """The union of both runs' hits per query on a (query, cell) grid whose docid codes ascend along a row.

    `source` maps each sorted cell to its place in a grid filled side by side (sparse hits in the first
    `widths[0]` columns, dense hits after them); `placed` holds where each side's hits go in that grid."""

    qids: list[str]
    codes: np.ndarray  # (Q, C) int64
    padding: np.ndarray | None  # (Q, C) bool: cells without a hit (None: there are none)
    source: np.ndarray  # (Q, C) int64 flat positions in the side-by-side grid
    pairs: np.ndarray  # flat positions of the first (sparse) cell of each docid both runs hold
    pair_rows: np.ndarray  # and their rows
    pair_sources: tuple[np.ndarray, np.ndarray]  # their sparse and dense hits' flat positions in the side-by-side grid
    placed: tuple[np.ndarray | None, np.ndarray | None]  # per side, flat positions of its hits in the side-by-side
    # grid (None: the side's hits fill its columns row by row)
    widths: tuple[int, int]
    lowest: np.ndarray  # (2, Q, 1): per side the query's minimum (0 without hits) and maximum (1 without hits)
    highest: np.ndarray

    @property
    def rectangular(self) -> bool:
        """Every query has as many hits as the side's widest: no padding anywhere."""
        return self.placed[0] is None

    @property
    def valid(self) -> np.ndarray:
        """(Q, C) bool: one cell per distinct docid, the first of a pair."""
        valid = np.ones(self.codes.shape, dtype=bool) if self.padding is None else ~self.padding
        valid.reshape(-1)[self.pairs + 1] = False
        return valid

    def candidates(self) -> np.ndarray:
        """How many distinct docids each query has."""
        if self.padding is None:
            return self.codes.shape[1] - np.bincount(self.pair_rows, minlength=len(self.qids))
        return self.valid.sum(axis=1)


def layout(sparse: RunArrays, dense: RunArrays, vocabulary: np.ndarray) -> Layout:
    """Sort both runs' hits of every query by docid; find the docids both hold."""
    qids = list(dict.fromkeys([*sparse.qids, *dense.qids]))
    row_of = {qid: row for row, qid in enumerate(qids)}
    widths = tuple(int(np.diff(run.offsets).max(initial=0)) for run in (sparse, dense))
    width = sum(widths)
    # Each cell holds (docid code << bits) | its column: sorting a row by value brings both copies of a docid
    # together, the sparse one first, and still says where each came from (value sorts beat argsorts).
    bits = max(width - 1, 1).bit_length()
    padding = (PADDING >> bits << bits) | max(width - 1, 0)  # above every real key; its column stays in the row
    # A query with no hits on a side: pyserini takes 0 as its minimum and 1 as its maximum.
    lowest, highest = np.zeros((2, len(qids), 1)), np.ones((2, len(qids), 1))
    # The usual case, both runs listing the same queries in the same order with equally many hits each,
    # fills the grid by reshaping; otherwise every hit goes to its computed cell.
    rectangular = len(qids) > 0 and np.array_equal(sparse.qids, dense.qids) and all(
        len(run.docids) == len(qids) * side_width for run, side_width in zip((sparse, dense), widths, strict=True))
    shape = (len(qids), width)
    keys = np.empty(shape, dtype=np.int64) if rectangular else np.full(shape, padding, dtype=np.int64)
    placed = []
    for side, (run, first_column) in enumerate(((sparse, 0), (dense, widths[0]))):
        side_columns = first_column + np.arange(widths[side])
        if rectangular:
            placed.append(None)
            cells = keys[:, first_column:first_column + widths[side]]
            np.left_shift(run.docids.reshape(len(qids), -1), bits, out=cells)
            cells |= side_columns
            if widths[side]:
                lowest[side, :, 0] = run.scores.reshape(len(qids), -1).min(axis=1)
                highest[side, :, 0] = run.scores.reshape(len(qids), -1).max(axis=1)
            continue
        rows = np.array([row_of[qid] for qid in run.qids], dtype=np.int64)
        lengths = np.diff(run.offsets)
        columns = first_column + np.arange(len(run.docids)) - np.repeat(run.offsets[:-1], lengths)
        placed.append(np.repeat(rows, lengths) * width + columns)
        keys.reshape(-1)[placed[-1]] = (run.docids << bits) | columns
        hit = lengths > 0
        if hit.any():
            lowest[side, rows[hit], 0] = np.minimum.reduceat(run.scores, run.offsets[:-1][hit])
            highest[side, rows[hit], 0] = np.maximum.reduceat(run.scores, run.offsets[:-1][hit])
    keys.sort(axis=1)
    columns = keys & ((1 << bits) - 1)
    codes = keys >> bits
    repeats = codes[:, 1:] == codes[:, :-1]  # cell j + 1 repeats cell j
    padded = None if rectangular else keys == padding
    if padded is not None:
        repeats &= ~padded[:, 1:]
    pairs = np.flatnonzero(repeats)
    pair_rows = pairs // max(width - 1, 1)
    pairs += pair_rows  # from the (Q, C - 1) comparison to the (Q, C) grid
    first, second = columns.reshape(-1)[pairs], columns.reshape(-1)[pairs + 1]
    # Equal codes sort sparse copies before dense ones, so a docid repeated within one run always shows
    # as a pair whose cells come from the same side.
    one_side = (first >= widths[0]) | (second < widths[0])
    if one_side.any():
        at = pairs[np.argmax(one_side)]
        raise RepeatedDocid(int(first[np.argmax(one_side)] >= widths[0]), str(vocabulary[codes.reshape(-1)[at]]),
                            qids[at // width])
    row_starts = np.arange(len(qids)) * width
    pair_starts = pair_rows * width
    return Layout(qids, codes, padded, row_starts[:, None] + columns, pairs, pair_rows,
                  (pair_starts + first, pair_starts + second), tuple(placed), widths, lowest, highest)


def side_by_side(grid: Layout, sparse: RunArrays, dense: RunArrays) -> np.ndarray:
    """(Q, W): each side's hits in its own columns (sparse first), in the order its run lists them; 0 in padding."""
    width = sum(grid.widths)
    hits = (np.empty if grid.rectangular else np.zeros)((len(grid.qids), width))
    for placed, run, columns in zip(grid.placed, (sparse, dense), (slice(0, grid.widths[0]), slice(grid.widths[0],
                                                                                               width)), strict=True):
        if grid.rectangular:
            hits[:, columns] = run.scores.reshape(len(grid.qids), -1)
        else:
            hits.reshape(-1)[placed] = run.scores
    return hits


def cell_scores(grid: Layout, hits: np.ndarray, missing: tuple[np.ndarray, np.ndarray] | None = None,
                pair_factor: float = 1.0) -> np.ndarray:
    """(Q, C) scores per sorted cell from per-hit values on the side-by-side grid `hits` (changed in place): a
    docid that one side lacks adds that side's `missing` value for its query ((Q, 1) per side; None: nothing), a
    docid both sides hold scores its two values' sum (sparse + dense), times `pair_factor`."""
    flat = hits.reshape(-1)
    pair_sums = flat[grid.pair_sources[0]] + flat[grid.pair_sources[1]]
    if missing is not None:
        hits[:, :grid.widths[0]] += missing[1]
        hits[:, grid.widths[0]:] += missing[0]
    scores = flat[grid.source]
    if pair_factor != 1.0:
        pair_sums *= pair_factor
    scores.reshape(-1)[grid.pairs] = pair_sums
    return scores


def weighted_scores(grid: Layout, sparse: RunArrays, dense: RunArrays, weights: tuple[float, float],
                    normalization: bool = False) -> np.ndarray:
    """weights[0] * sparse + weights[1] * dense per sorted cell (Eq. 7 with weights (alpha, 1)), a side that
    lacks the docid counting its minimum for the query; optionally each side min-max centred first."""

    def centred(values: np.ndarray, side: int) -> np.ndarray:
        """pyserini's normalisation: centred on the query's mid-range, divided by its range."""
        if not normalization:
            return values
        low, high = grid.lowest[side], grid.highest[side]
        spread = high - low
        return (values - (low + high) / 2) / np.where(spread == 0, 1.0, spread)

    hits = side_by_side(grid, sparse, dense)
    for side, columns in enumerate((slice(0, grid.widths[0]), slice(grid.widths[0], None))):
        own = hits[:, columns]
        if normalization:
            own[...] = centred(own, side)
        if weights[side] != 1.0:
            own *= weights[side]
    floor = (weights[0] * centred(grid.lowest[0], 0), weights[1] * centred(grid.lowest[1], 1))
    return cell_scores(grid, hits, floor)


def ranking(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions in `scores` of each row's top k, and their scores: by score, then docid descending
    (codes ascend along a row). Turns the (Q, C) `scores` array's -0.0 into 0.0, in place.

    One value sort of int64 keys does it: the float's bits made order-preserving, inverted (descending),
    their lowest `bits` replaced by the inverted column. Scores closer than those bits can tell apart
    (about 1e-12 relative) are checked for, and such rows sorted exactly (stable, by score alone).
    """
    width = scores.shape[1]
    bits = max(width - 1, 1).bit_length()
    low = (1 << bits) - 1
    scores += 0.0  # -0.0 becomes 0.0: equal floats have equal bits
    raw = scores.view(np.int64)
    keys = raw >> 63
    keys &= np.int64(0x7FFFFFFFFFFFFFFF)
    keys ^= raw  # integer order = float order
    keys |= low
    np.invert(keys, out=keys)  # descending, the lowest bits zero
    keys |= width - 1 - np.arange(width)
    if k + 1 < width:  # the top k + 1 first, then only they are sorted
        keys = np.partition(keys, k, axis=1)[:, :k + 1]
    keys = np.sort(keys, axis=1)[:, :k + 1]
    row_ends = (np.arange(1, len(scores) + 1) * width - 1)[:, None]
    cells = row_ends - (keys & low)
    ranked = np.take(scores, cells)  # flat indexing: several times faster than take_along_axis
    # Equal scores have equal keys, so they are in docid order; only scores that differ in the dropped bits
    # alone can be out of order.
    rows = (ranked[:, :-1] < ranked[:, 1:]).any(axis=1)
    cells, ranked = cells[:, :k], ranked[:, :k]
    if rows.any():
        cells[rows] = row_ends[rows] - np.argsort(-scores[rows][:, ::-1], axis=1, kind="stable")[:, :k]
        ranked[rows] = np.take(scores, cells[rows])
    return cells, ranked


Scorer = Callable[[Layout, RunArrays, RunArrays], np.ndarray]  # a block's (Q, C) cell scores from its runs


def fuse_blocks(sparse: RunArrays, dense: RunArrays, vocabulary: np.ndarray, k: int,
                scorers: Sequence[Scorer]) -> list[RunArrays]:
    """Each scorer's fused top k of every query in rank order, as RunArrays over the same vocabulary.

    Queries go BLOCK at a time, and every scorer ranks the same block's layout: a block's grids stay in the CPU's
    cache, which makes the whole ~2x faster than one grid for all queries (and bounds the memory)."""
    qids = list(dict.fromkeys([*sparse.qids, *dense.qids]))
    if len(qids) <= BLOCK:
        blocks = [(sparse, dense)]
    elif np.array_equal(sparse.qids, dense.qids):  # the usual case (both runs in topic order): views, no copies
        blocks = ((sparse.slice(start, min(start + BLOCK, len(qids))), dense.slice(start, min(start + BLOCK,
                                                                                                 len(qids))))
                  for start in range(0, len(qids), BLOCK))
    else:
        rows = [{qid: row for row, qid in enumerate(run.qids)} for run in (sparse, dense)]
        blocks = (tuple(run.take(np.array([row[qid] for qid in qids[start:start + BLOCK] if qid in row],
                                          dtype=np.int64)) for run, row in zip((sparse, dense), rows, strict=True))
                  for start in range(0, len(qids), BLOCK))
    parts: list[list[RunArrays]] = [[] for _ in scorers]
    for block_sparse, block_dense in blocks:
        grid = layout(block_sparse, block_dense, vocabulary)
        for part, scorer in zip(parts, scorers, strict=True):
            part.append(top_k(grid, scorer(grid, block_sparse, block_dense), k))
    return [part[0] if len(part) == 1 else RunArrays.concatenate(part) for part in parts]


def fuse_arrays(sparse: RunArrays, dense: RunArrays, vocabulary: np.ndarray, alpha: float, k: int = 1000,
                normalization: bool = False, weight_on_dense: bool = False) -> RunArrays:
    """Eq. 7 for every query: the fused top k in rank order, as RunArrays over the same vocabulary."""
    weights = (1.0, alpha) if weight_on_dense else (alpha, 1.0)
    return fuse_blocks(sparse, dense, vocabulary, k, [
        lambda grid, block_sparse, block_dense: weighted_scores(grid, block_sparse, block_dense, weights,
                                                                normalization)])[0]


def top_k(grid: Layout, scores: np.ndarray, k: int) -> RunArrays:
    """The top k of every row of a layout's cell `scores` (changed in place), one cell per docid; a cell scored
    -inf is no candidate."""
    scores.reshape(-1)[grid.pairs + 1] = -np.inf  # a docid both runs hold ranks once, by its first cell
    if grid.padding is not None:
        scores[grid.padding] = -np.inf
    cells, ranked = ranking(scores, k)
    codes = np.take(grid.codes, cells)
    lengths = (ranked > -np.inf).sum(axis=1)  # candidates rank first in every row; -inf marks the rest
    if (lengths == cells.shape[1]).all():  # the usual case: every query has k candidates or more
        codes, ranked = codes.reshape(-1), ranked.reshape(-1)
    else:
        kept = np.arange(cells.shape[1]) < lengths[:, None]
        codes, ranked = codes[kept], ranked[kept]
    return RunArrays(np.asarray(grid.qids, dtype=object), np.concatenate([[0], np.cumsum(lengths)]), codes, ranked)


def fuse(sparse: Run | pd.DataFrame, dense: Run | pd.DataFrame, alpha: float, k: int = 1000,
         normalization: bool = False, weight_on_dense: bool = False) -> dict[str, list[tuple[str, float]]]:
    """Eq. 7 for runs in memory; {qid: [(docid, score), ...]} in rank order, at most k each."""
    frames = [run if isinstance(run, pd.DataFrame) else run_frame(run) for run in (sparse, dense)]
    sparse_arrays, dense_arrays, vocabulary = encode_runs(*frames)
    fused = fuse_arrays(sparse_arrays, dense_arrays, vocabulary, alpha, k, normalization, weight_on_dense)
    return {qid: list(zip(vocabulary[fused.docids[lo:hi]].tolist(), fused.scores[lo:hi].tolist(), strict=True))
            for qid, lo, hi in zip(fused.qids, fused.offsets[:-1], fused.offsets[1:], strict=True)}


def fuse_runs(sparse_path: Path, dense_path: Path, run_path: Path, alpha: float, k: int = 1000,
              normalization: bool = False, weight_on_dense: bool = False, latency_queries: int = 200,
              tag: str = "hybrid") -> dict:
    """Fuse two run files into a third; beside it, the fusion latency and the hybrid's latency."""
    sparse, dense, vocabulary = encode_runs(read_run_frame(sparse_path), read_run_frame(dense_path))
    try:
        fused = fuse_arrays(sparse, dense, vocabulary, alpha, k, normalization, weight_on_dense)
    except RepeatedDocid as err:
        path = (sparse_path, dense_path)[err.side]
        raise InputFormatError(path, None, "each docid once per query", str(err)) from None
    write_run_arrays(run_path, fused, vocabulary, tag)
    # Latency per query as a served system sees it: one query's two hit lists at a time.
    rows = [{qid: row for row, qid in enumerate(run.qids)} for run in (sparse, dense)]
    empty = RunArrays(np.array([], dtype=object), np.zeros(1, dtype=np.int64), np.array([], dtype=np.int64),
                      np.array([]))

    def fuse_one(qid: str) -> RunArrays:
        sides = [run.slice(row[qid], row[qid] + 1) if qid in row else empty
                 for run, row in zip((sparse, dense), rows, strict=True)]
        return fuse_arrays(*sides, vocabulary, alpha, k, normalization, weight_on_dense)

    timing = time_each(fused.qids[:latency_queries].tolist(), fuse_one)
    stages = {}
    for name, path in (("sparse", sparse_path), ("dense", dense_path)):
        latency_file = Path(path).with_suffix(".latency.json")
        stages[name] = json.loads(latency_file.read_text()).get("latency_ms_median") if latency_file.exists() else None
    record = {"alpha": alpha, "queries": len(fused.qids), "device": cpu_name(), "latency_threads": 1,
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
