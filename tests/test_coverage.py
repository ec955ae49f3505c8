"""Judgement coverage (Judged@10, RBP and its residual) on a hand-computed example, and against trectools
(tests/trectools_oracle.py) on random runs at several depths and persistences."""

import ir_measures
import numpy as np
import pandas as pd
import pytest

from pipeline.coverage import coverage, main
from pipeline.formats import InputFormatError, write_qrels, write_run
from tests import trectools_oracle

QRELS = {
    "q1": {"d1": 2, "d2": 0, "d3": 1, "d5": -1, "d6": 1, "d9": 1},  # graded; -1 is judged non-relevant
    "q2": {"e1": 1, "e4": 0},
    "q3": {"f1": 1},  # not in the run
    "q5": {"g9": 1, "g2": 0},  # no relevant document retrieved
}
RUN = {
    # d2 and u1 tie: trec_eval's order puts u1 (the larger docid) at rank 2, d2 at 3.
    "q1": [("d1", 12.0), ("u1", 11.0), ("d2", 11.0), ("d3", 9.0), ("d5", 8.0), ("u2", 7.0), ("u3", 6.0),
           ("u4", 5.0), ("u5", 4.0), ("u6", 3.0), ("d6", 2.0), ("u7", 1.0)],
    "q2": [("e1", 4.0), ("e2", 3.0), ("e3", 2.0), ("e4", 1.0)],  # fewer than 10 results
    "q4": [("h1", 2.0), ("h2", 1.0)],  # no judgements: left out
    "q5": [("g1", 5.0), ("g2", 4.0)],
}
# RBP(p = 0.8) weights 0.2 * 0.8 ** (rank - 1): 0.2, 0.16, 0.128, 0.1024, 0.08192, 0.065536, 0.0524288,
# 0.04194304, 0.033554432, 0.0268435456, 0.02147483648, 0.017179869184 at ranks 1..12. Past the end of a list of
# n < 1000 results everything is unknown: the residual gains 0.8 ** n (Moffat & Zobel).
EXPECTED = {
    # judged in the top 10: d1, d2, d3, d5 -> 4 / 10. RBP: d1 (rank 1, rel 2 counts 1), d3 (4), d6 (11):
    # 0.2 + 0.1024 + 0.02147483648. Residual: unjudged u1 (2), u2..u6 (6..10), u7 (12):
    # 0.16 + 0.065536 + 0.0524288 + 0.04194304 + 0.033554432 + 0.0268435456 + 0.017179869184, plus 0.8 ** 12.
    "q1": {"judged@10": 0.4, "rbp": 0.32387483648, "rbp_residual": 0.397485686784 + 0.068719476736},
    # e1 and e4 judged of 4 results: 2 / 4. RBP: e1 at 1. Residual: e2, e3: 0.16 + 0.128, plus 0.8 ** 4.
    "q2": {"judged@10": 0.5, "rbp": 0.2, "rbp_residual": 0.288 + 0.4096},
    # Not retrieved: nothing judged, RBP 0, everything unknown: residual 0.8 ** 0.
    "q3": {"judged@10": 0.0, "rbp": 0.0, "rbp_residual": 1.0},
    # g2 judged (1 of 2 results); nothing relevant retrieved; g1 unjudged at rank 1: residual 0.2 + 0.8 ** 2.
    "q5": {"judged@10": 0.5, "rbp": 0.0, "rbp_residual": 0.2 + 0.64},
    # Means over the four queries of the qrels: (0.4 + 0.5 + 0 + 0.5) / 4, (0.32387483648 + 0.2) / 4,
    # (0.46620516352 + 0.6976 + 1 + 0.84) / 4.
    "all": {"judged@10": 0.35, "rbp": 0.13096870912, "rbp_residual": 0.75095129088},
}


def frame(run):
    return pd.DataFrame([(q, d, s) for q, hits in run.items() for d, s in hits], columns=["qid", "docid", "score"])


def test_hand_computed():
    table = coverage(frame(RUN), QRELS)
    assert list(table) == ["q1", "q2", "q3", "q5", "all"]
    for qid, expected in EXPECTED.items():
        assert table[qid] == pytest.approx(expected, rel=1e-12, abs=1e-15), qid


def test_judged_is_ir_measures_judged():
    """Judged@10 agrees with ir_measures' (judged / min(results, 10), -1 judged) on the queries the run has."""
    run = {q: dict(hits) for q, hits in RUN.items()}
    theirs = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.Judged @ 10], QRELS, run)}
    table = coverage(frame(RUN), QRELS)
    assert {q: table[q]["judged@10"] for q in theirs} == pytest.approx(theirs)


def test_persistence_and_files(tmp_path):
    write_run(tmp_path / "run.trec", RUN, "r")
    write_qrels(tmp_path / "qrels.txt", QRELS)
    table = coverage(tmp_path / "run.trec", tmp_path / "qrels.txt", judged_depth=2, p=0.5, rbp_depth=3)
    # q1's top 2, d1 and u1: 1 / 2 judged. RBP(0.5) to depth 3: d1 0.5; residual: u1 0.25, plus 0.5 ** 3.
    assert table["q1"] == pytest.approx({"judged@2": 0.5, "rbp": 0.5, "rbp_residual": 0.375})
    main(["--run", str(tmp_path / "run.trec"), "--qrels", str(tmp_path / "qrels.txt"),
          "--out", str(tmp_path / "c.tsv")])
    lines = (tmp_path / "c.tsv").read_text().splitlines()
    assert lines[0] == "qid\tjudged@10\trbp\trbp_residual" and lines[-1] == "all\t0.350000\t0.130969\t0.750951"
    (tmp_path / "dup.trec").write_text("q1 Q0 d1 1 2.0 r\nq1 Q0 d1 2 1.0 r\n")
    with pytest.raises(InputFormatError, match=r"dup\.trec.*d1 twice for query q1"):
        coverage(tmp_path / "dup.trec", QRELS)


def random_case(seed: int, queries: int = 40, depth: int = 30) -> tuple[pd.DataFrame, dict]:
    """A run with tied scores and ragged lengths (one-hit queries among them), qrels with every grade (-1 to 3)
    that judge some queries the run lacks and leave some of the run's queries unjudged."""
    rng = np.random.default_rng(seed)
    rows, qrels = [], {}
    for q in range(queries):
        n = 1 if q % 6 == 0 else int(rng.integers(2, depth + 1))
        docs = rng.choice(3 * depth, n, replace=False)
        if q % 9 != 4:  # the run lacks q4, q13, ...
            rows += [(f"q{q}", f"d{doc}", float(score))
                     for doc, score in zip(docs, np.round(rng.normal(size=n) * 2), strict=True)]
        if q % 10 != 7:  # q7, q17, ... unjudged
            pool = rng.choice(3 * depth, int(rng.integers(1, 2 * depth)), replace=False)
            qrels[f"q{q}"] = {f"d{doc}": int(rel) for doc, rel in zip(pool, rng.integers(-1, 4, len(pool)),
                                                                         strict=True)}
    return pd.DataFrame(rows, columns=["qid", "docid", "score"]).sample(frac=1.0, random_state=seed), qrels


@pytest.mark.parametrize(("seed", "judged_depth", "p", "rbp_depth"), [
    (0, 10, 0.8, 1000), (1, 5, 0.5, 20), (2, 20, 0.95, 8), (3, 1, 0.9, 3)])
def test_equals_trectools(seed, judged_depth, p, rbp_depth):
    """Judged@k is 1 - UNJ@k * k / min(n, k) of trectools' UNJ@k; RBP is trectools'; the residual is trectools'
    where the list reaches the depth, and trectools' - p ** depth + p ** n for a list of n < depth results."""
    run, qrels = random_case(seed)
    ours = coverage(run, qrels, judged_depth, p, rbp_depth)
    theirs = trectools_oracle.coverage(run, qrels, judged_depth, p, rbp_depth)
    lengths = run.groupby("qid").size()
    assert set(theirs.index) < set(ours) and any(lengths < rbp_depth) and any(np.isnan(theirs["residual"]))
    for qid, row in theirs.iterrows():
        n = lengths[qid]
        assert ours[qid][f"judged@{judged_depth}"] == pytest.approx(
            1 - row["unjudged"] * judged_depth / min(n, judged_depth), abs=1e-12), qid
        assert ours[qid]["rbp"] == pytest.approx(row["rbp"], abs=1e-12), qid
        if not np.isnan(row["residual"]):  # trectools: NaN where no relevant document is retrieved
            shift = 0.0 if n >= rbp_depth else p ** n - p ** rbp_depth
            assert ours[qid]["rbp_residual"] == pytest.approx(row["residual"] + shift, abs=1e-12), qid
