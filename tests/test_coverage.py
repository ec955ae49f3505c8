"""Judgement coverage (Judged@10, RBP and its residual through trectools) on a hand-computed example."""

import ir_measures
import pandas as pd
import pytest

from pipeline.coverage import coverage, main
from pipeline.io import InputFormatError, write_qrels, write_run

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
# 0.04194304, 0.033554432, 0.0268435456, 0.02147483648, 0.017179869184 at ranks 1..12; 0.8 ** 1000 ~ 1e-97.
EXPECTED = {
    # judged in the top 10: d1, d2, d3, d5 -> 4 / 10. RBP: d1 (rank 1, rel 2 counts 1), d3 (4), d6 (11):
    # 0.2 + 0.1024 + 0.02147483648. Residual: unjudged u1 (2), u2..u6 (6..10), u7 (12):
    # 0.16 + 0.065536 + 0.0524288 + 0.04194304 + 0.033554432 + 0.0268435456 + 0.017179869184.
    "q1": {"judged@10": 0.4, "rbp": 0.32387483648, "rbp_residual": 0.397485686784},
    # e1 and e4 judged of 4 results: 2 / 4. RBP: e1 at 1. Residual: e2, e3: 0.16 + 0.128.
    "q2": {"judged@10": 0.5, "rbp": 0.2, "rbp_residual": 0.288},
    # Not retrieved: nothing judged, RBP 0, residual 0.8 ** 1000.
    "q3": {"judged@10": 0.0, "rbp": 0.0, "rbp_residual": 0.0},
    # g2 judged (1 of 2 results); nothing relevant retrieved; g1 unjudged at rank 1: residual 0.2.
    "q5": {"judged@10": 0.5, "rbp": 0.0, "rbp_residual": 0.2},
    # Means over the four queries of the qrels: (0.4 + 0.5 + 0 + 0.5) / 4, (0.32387483648 + 0.2) / 4,
    # (0.397485686784 + 0.288 + 0 + 0.2) / 4.
    "all": {"judged@10": 0.35, "rbp": 0.13096870912, "rbp_residual": 0.221371421696},
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
    assert lines[0] == "qid\tjudged@10\trbp\trbp_residual" and lines[-1] == "all\t0.350000\t0.130969\t0.221371"
    (tmp_path / "dup.trec").write_text("q1 Q0 d1 1 2.0 r\nq1 Q0 d1 2 1.0 r\n")
    with pytest.raises(InputFormatError, match=r"dup\.trec.*d1 twice for query q1"):
        coverage(tmp_path / "dup.trec", QRELS)
