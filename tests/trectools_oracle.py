"""trectools 0.0.50 driven the slow, direct way: the oracle that pipeline.fusion_methods and pipeline.coverage are
held to (tests) and timed against (benchmarks/fusion_methods.py).

Runs are frames with columns qid, docid, score. trectools reads rank order from row order, so each run reaches it
sorted as trec_eval sorts: score, then docid descending. What trectools leaves to the caller is done here in
pandas, independently of the array code: min-max normalisation for CombSUM/CombMNZ, Borda points (its
borda_count is a stub), and the final order of equal scores (docid descending, where trectools sorts ascending).
"""

from __future__ import annotations

import sys
import warnings

import pandas as pd
from trectools import TrecEval, TrecQrel, TrecRun, fusion

from pipeline.formats import Qrels


def trec_order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["qid", "score", "docid"], ascending=[True, False, False], ignore_index=True)


def trec_run(frame: pd.DataFrame) -> TrecRun:
    ranked = trec_order(frame)
    run = TrecRun()
    run.load_run_from_dataframe(pd.DataFrame({
        "query": ranked["qid"], "q0": "Q0", "docid": ranked["docid"], "rank": ranked.groupby("qid").cumcount() + 1,
        "score": ranked["score"], "system": "run"}))
    return run


def min_max(frame: pd.DataFrame) -> pd.DataFrame:
    by_query = frame.groupby("qid")["score"]
    low, high = by_query.transform("min"), by_query.transform("max")
    spread = high - low
    return frame.assign(score=((frame["score"] - low) / spread.where(spread > 0, 1.0)).where(spread > 0, 1.0))


def borda_points(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Aslam & Montague: c - r + 1 points at rank r, (c - n + 1) / 2 for each of the c candidates a run lacks."""
    union = pd.concat(frames)[["qid", "docid"]].drop_duplicates()
    candidates = union.groupby("qid").size()
    pointed = []
    for frame in frames:
        ranked = trec_order(frame)
        c = ranked["qid"].map(candidates)
        points = ranked.assign(score=(c - ranked.groupby("qid").cumcount()).astype(float))
        missing = union.merge(frame[["qid", "docid"]], how="left", indicator=True)
        missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
        lengths = frame.groupby("qid").size().reindex(candidates.index, fill_value=0)
        shared = (candidates - lengths + 1) / 2
        pointed.append(pd.concat([points, missing.assign(score=missing["qid"].map(shared))], ignore_index=True))
    return pointed


def fuse(sparse: pd.DataFrame, dense: pd.DataFrame, method: str, value: float | None = None) -> pd.DataFrame:
    """trectools' fusion of the two runs (qid, docid, score), every candidate, in trec_eval's order."""
    frames = [sparse, dense]
    if method in ("combsum", "combmnz"):
        frames = [min_max(frame) for frame in frames]
    elif method == "borda":
        frames = borda_points(frames)
    runs = [trec_run(frame) for frame in frames]
    if method == "rrf":
        fused = fusion.reciprocal_rank_fusion(runs, k=60 if value is None else value, max_docs=sys.maxsize)
    elif method == "rbp":
        fused = fusion.rank_biased_precision_fusion(runs, p=0.8 if value is None else value, max_docs=sys.maxsize)
    else:
        with warnings.catch_warnings():  # combos sorts in place, which pandas deprecates
            warnings.simplefilter("ignore")
            fused = fusion.combos(runs, strategy="mnz" if method == "combmnz" else "sum", max_docs=sys.maxsize)
    data = fused.run_data.rename(columns={"query": "qid"})
    return trec_order(data[["qid", "docid", "score"]].astype({"qid": str, "docid": str, "score": float}))


def trec_qrel(qrels: Qrels) -> TrecQrel:
    qrel = TrecQrel()
    qrel.qrels_data = pd.DataFrame([(qid, "0", docid, rel) for qid, judged in qrels.items()
                                    for docid, rel in judged.items()], columns=["query", "q0", "docid", "rel"])
    return qrel


def coverage(run: pd.DataFrame, qrels: Qrels, judged_depth: int, p: float, rbp_depth: int) -> pd.DataFrame:
    """Per query of the run that the qrels judge: trectools' UNJ@judged_depth, RBP(p)@rbp_depth (ties not averaged:
    trec_eval's order breaks them) and its residual (p ** rbp_depth added, trectools' definition)."""
    judged = run[run["qid"].isin(list(qrels))]
    evaluation = TrecEval(trec_run(judged), trec_qrel(qrels))
    qids = sorted(judged["qid"].unique())
    unjudged = evaluation.get_unjudged(depth=judged_depth, per_query=True).iloc[:, 0].reindex(qids)
    rbp, residual = evaluation.get_rbp(p=p, depth=rbp_depth, per_query=True, average_ties=False)
    return pd.DataFrame({"unjudged": unjudged, "rbp": rbp.iloc[:, 0].reindex(qids, fill_value=0.0),
                         "residual": residual.iloc[:, 0].reindex(qids)}, index=qids)
