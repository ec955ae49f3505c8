"""coverage: how much of a run the qrels judge: Judged@k, and RBP with its residual (Moffat & Zobel 2008).

    python -m pipeline.coverage --run results/D/runs/tct_inbatch.dev.trec --qrels resources/D/qrels.dev.txt \
        --out results/D/coverage/tct_inbatch.dev.tsv

One row per query of the qrels and their mean under `all`, as pipeline.evaluate writes metrics (a run's query
without judgements is left out). Ranks are trec_eval's: score, then docid descending. A judgement of any grade,
-1 included, makes a document judged; relevant means rel > 0.
- judged@k (k = 10): the fraction of the top k results that is judged, over the n results when there are fewer
  than k (ir_measures' Judged@k); 0 for a query the run lacks.
- rbp: RBP(p = 0.8) over the top `rbp_depth` (1000), binary relevance: the sum of (1 - p) * p ** (r - 1) over the
  relevant documents at ranks r.
- rbp_residual: what the documents of unknown relevance could add. Those are the unjudged documents retrieved
  within the depth and, as Moffat & Zobel count it, everything past the end of the ranking: p ** min(n, rbp_depth)
  for a list of n results (1 for a query the run lacks). trectools (get_rbp) adds p ** rbp_depth whatever the
  list's length, so the two agree for lists of rbp_depth results or more and differ by p ** n - p ** rbp_depth
  for shorter ones (tests/test_coverage.py holds it to trectools 0.0.50 on both counts).
Everything is array code over the whole run (pipeline.run_arrays), judgements matched by integer keys.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.evaluate import MEAN_ROW
from pipeline.formats import InputFormatError, Qrels, read_qrels
from pipeline.run_arrays import docid_lookup, encode_frames, read_run_frame

log = logging.getLogger(__name__)


def judgement_keys(qrels: Qrels, qids: np.ndarray, vocabulary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys (row in `qids` * vocabulary size + docid code) of the judged and of the relevant documents that
    the run retrieved (no others can match a hit)."""
    judged, relevant = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for row, qid in enumerate(qids):
        positions, found = docid_lookup(vocabulary, list(qrels[qid]))
        rels = np.array(list(qrels[qid].values()), dtype=np.int64)
        keys = row * len(vocabulary) + positions[found]
        judged.append(keys)
        relevant.append(keys[rels[found] > 0])
    return np.sort(np.concatenate(judged)), np.sort(np.concatenate(relevant))


def coverage(run: Path | pd.DataFrame, qrels: Path | Qrels, judged_depth: int = 10, p: float = 0.8,
             rbp_depth: int = 1000) -> dict[str, dict[str, float]]:
    """{qid: {judged@k, rbp, rbp_residual}} for every query of the qrels, and their mean under MEAN_ROW.

    `run` is a run file or a frame with columns qid, docid, score (pipeline.run_arrays.read_run_frame's)."""
    frame = run if isinstance(run, pd.DataFrame) else read_run_frame(run)
    qrels = qrels if isinstance(qrels, dict) else read_qrels(qrels)
    judged_queries = frame["qid"].isin(list(qrels))
    if not judged_queries.all():
        log.warning("%d queries of the run have no judgements and are left out",
                    frame.loc[~judged_queries, "qid"].nunique())
    (ranked,), vocabulary = encode_frames(frame[judged_queries])
    ranked = ranked.in_rank_order()
    lengths = np.diff(ranked.offsets)
    rows = np.repeat(np.arange(len(ranked.qids)), lengths)
    keys = rows * len(vocabulary) + ranked.docids
    sorted_keys = np.sort(keys)
    repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if len(repeated):
        row, code = divmod(int(sorted_keys[repeated[0]]), len(vocabulary))
        raise InputFormatError("run" if isinstance(run, pd.DataFrame) else run, None, "each docid once per query",
                               f"{vocabulary[code]} twice for query {ranked.qids[row]}")
    ranks = np.arange(len(keys)) - ranked.offsets[rows] + 1
    judged_keys, relevant_keys = judgement_keys(qrels, ranked.qids, vocabulary)
    judged = np.isin(keys, judged_keys)
    relevant = np.isin(keys, relevant_keys)

    judged_at = (np.bincount(rows[(ranks <= judged_depth) & judged], minlength=len(lengths))
                 / np.maximum(np.minimum(lengths, judged_depth), 1))
    weights = (1.0 - p) * p ** np.arange(rbp_depth)  # rank r weighs (1 - p) * p ** (r - 1)
    within = ranks <= rbp_depth
    rank_weight = weights[np.minimum(ranks, rbp_depth) - 1]
    rbp = np.bincount(rows[within & relevant], rank_weight[within & relevant], minlength=len(lengths))
    unknown = within & ~judged
    residual = (np.bincount(rows[unknown], rank_weight[unknown], minlength=len(lengths))
                + p ** np.minimum(lengths, rbp_depth))
    names = (f"judged@{judged_depth}", "rbp", "rbp_residual")
    retrieved = {qid: dict(zip(names, map(float, values), strict=True))
                 for qid, *values in zip(ranked.qids, judged_at, rbp, residual, strict=True)}
    absent = dict(zip(names, (0.0, 0.0, 1.0), strict=True))  # nothing retrieved: everything unknown
    table = {qid: retrieved.get(qid, absent) for qid in qrels}
    table[MEAN_ROW] = {name: sum(row[name] for row in table.values()) / max(len(qrels), 1) for name in names}
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--judged-depth", type=int, default=10)
    parser.add_argument("--p", type=float, default=0.8, help="RBP's persistence")
    parser.add_argument("--rbp-depth", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    table = coverage(args.run, args.qrels, args.judged_depth, args.p, args.rbp_depth)
    names = list(table[MEAN_ROW])
    with atomic_output(args.out) as out:
        out.write("qid\t" + "\t".join(names) + "\n")
        out.writelines(qid + "\t" + "\t".join(f"{row[name]:.6f}" for name in names) + "\n"
                       for qid, row in table.items())
    log.info("%s: %s", args.run, "  ".join(f"{name} {value:.4f}" for name, value in table[MEAN_ROW].items()))


if __name__ == "__main__":
    run_stage(main)
