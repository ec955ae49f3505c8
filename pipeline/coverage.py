"""coverage: how much of a run the qrels judge, by trectools' TrecEval: Judged@k and RBP with its residual.

    python -m pipeline.coverage --run results/D/runs/tct_inbatch.dev.trec --qrels resources/D/qrels.dev.txt \
        --out results/D/coverage/tct_inbatch.dev.tsv

One row per query of the qrels and their mean under `all`, as pipeline.evaluate writes metrics (a run's query
without judgements is left out; a query the run lacks has nothing judged, RBP 0 and residual p ** depth). Ranks are
trec_eval's: score, then docid descending. A judgement of any grade, -1 included, makes a document judged;
relevant means rel > 0.
- judged@k (k = 10): the fraction of the top k results that is judged, over the n results when there are fewer
  than k (ir_measures' Judged@k). trectools' get_unjudged gives UNJ@k = unjudged / k even then, so 1 - UNJ@k would
  count a short list's empty places as judged: judged@k = 1 - UNJ@k * k / min(n, k).
- rbp: RBP(p = 0.8) over the top `rbp_depth` (1000), binary relevance, by trectools' get_rbp. It ranks by row order,
  so it is given the run in trec_eval's order, with ties not averaged (average_ties=False): trec_eval's order breaks
  them, and trectools' averaging would also join equal scores of neighbouring queries.
- rbp_residual: what the unjudged documents could add, plus p ** rbp_depth (trectools' definition). trectools' own
  per-query residual is NaN for a query with no relevant document retrieved (it subtracts two frames, one lacking
  that query), so it is computed as trectools computes it, by get_rbp with every unjudged document retrieved
  judged relevant, minus the RBP, plus p ** rbp_depth.
Qrels reach trectools as pipeline.io reads them: TrecQrel's own reader drops negative judgements.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd
from trectools import TrecEval, TrecQrel, TrecRun

from pipeline.cli import run_stage
from pipeline.evaluate import MEAN_ROW
from pipeline.io import InputFormatError, Qrels, atomic_output, read_qrels
from pipeline.run_arrays import read_run_frame

log = logging.getLogger(__name__)


def trec_qrel(frame: pd.DataFrame) -> TrecQrel:
    """Judgements (columns query, docid, rel) as a trectools TrecQrel, every grade kept."""
    qrel = TrecQrel()
    qrel.qrels_data = frame.assign(q0="0")[["query", "q0", "docid", "rel"]]
    return qrel


def rbp_per_query(run: TrecRun, judgements: pd.DataFrame, p: float, depth: int, qids: list[str]) -> pd.Series:
    """trectools' RBP per query of `qids` (0 where it has none: no relevant document retrieved)."""
    frame = TrecEval(run, trec_qrel(judgements)).get_rbp(p=p, depth=depth, per_query=True, average_ties=False)[0]
    return frame.iloc[:, 0].reindex(qids, fill_value=0.0)


def coverage(run: Path | pd.DataFrame, qrels: Path | Qrels, judged_depth: int = 10, p: float = 0.8,
             rbp_depth: int = 1000) -> dict[str, dict[str, float]]:
    """{qid: {judged@k, rbp, rbp_residual}} for every query of the qrels, and their mean under MEAN_ROW.

    `run` is a run file or a frame with columns qid, docid, score (pipeline.run_arrays.read_run_frame's)."""
    frame = run if isinstance(run, pd.DataFrame) else read_run_frame(run)
    qrels = qrels if isinstance(qrels, dict) else read_qrels(qrels)
    repeated = frame.duplicated(["qid", "docid"])
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise InputFormatError("run" if isinstance(run, pd.DataFrame) else run, None, "each docid once per query",
                               f"{first['docid']} twice for query {first['qid']}")
    qids = list(qrels)
    judged_queries = frame["qid"].isin(qids)
    if not judged_queries.all():
        log.warning("%d queries of the run have no judgements and are left out",
                    frame.loc[~judged_queries, "qid"].nunique())
    ranked = frame[judged_queries].sort_values(["qid", "score", "docid"], ascending=[True, False, False])
    trec_run = TrecRun()
    trec_run.load_run_from_dataframe(pd.DataFrame({
        "query": ranked["qid"], "q0": "Q0", "docid": ranked["docid"], "rank": ranked.groupby("qid").cumcount() + 1,
        "score": ranked["score"], "system": "run"}))
    judgements = pd.DataFrame([(qid, docid, rel) for qid, judged in qrels.items() for docid, rel in judged.items()],
                              columns=["query", "docid", "rel"])
    unjudged = TrecEval(trec_run, trec_qrel(judgements)).get_unjudged(depth=judged_depth, per_query=True).iloc[:, 0]
    results = ranked.groupby("qid").size().clip(upper=judged_depth)
    judged = (1 - unjudged * judged_depth / results).reindex(qids, fill_value=0.0)
    rbp = rbp_per_query(trec_run, judgements, p, rbp_depth, qids)
    # Every retrieved document judged relevant unless the qrels judge it: RBP's largest value.
    retrieved = pd.DataFrame({"query": ranked["qid"], "docid": ranked["docid"], "rel": 1})
    optimistic = pd.concat([retrieved, judgements]).drop_duplicates(["query", "docid"], keep="last")
    residual = rbp_per_query(trec_run, optimistic, p, rbp_depth, qids) - rbp + p ** rbp_depth
    names = (f"judged@{judged_depth}", "rbp", "rbp_residual")
    table = {qid: dict(zip(names, map(float, values), strict=True))
             for qid, *values in zip(qids, judged, rbp, residual, strict=True)}
    table[MEAN_ROW] = {name: sum(row[name] for row in table.values()) / max(len(qids), 1) for name in names}
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
