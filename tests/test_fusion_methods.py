"""The fusion methods (pipeline.fusion_methods) on hand-computed examples, whose fused order and scores are written
out literally, and against trectools itself (tests/trectools_oracle.py) on random runs with ties, queries missing
from one run, short lists, one-hit queries and lists past trectools' depth of 1000."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline import fusion
from pipeline.evaluate import score_run
from pipeline.formats import InputFormatError, read_run, write_qrels, write_run
from pipeline.fusion_methods import DEPTH, METHODS, fuse_frames, fuse_runs, main, tune_methods
from tests import trectools_oracle

# q1: sparse ranks a, c, b, d (b and c tie at 2.0: trec_eval's order puts the larger docid, c, first); dense ranks
# b, e, a. e is only in the dense run, c and d only in the sparse one.
# q2: sparse x, y, z; dense y, x, w.
# q3: only in the dense run, where n and m tie (n first).
SPARSE = [("q1", "a", 3.0), ("q1", "b", 2.0), ("q1", "c", 2.0), ("q1", "d", 1.0),
          ("q2", "x", 5.0), ("q2", "y", 4.0), ("q2", "z", 1.0)]
DENSE = [("q1", "b", 0.9), ("q1", "e", 0.8), ("q1", "a", 0.5),
         ("q2", "y", 10.0), ("q2", "x", 8.0), ("q2", "w", 6.0),
         ("q3", "m", 2.0), ("q3", "n", 2.0)]

EXPECTED = {
    # RRF, k = 60: 1 / (60 + rank) summed over the runs.
    ("rrf", 60): [
        ("q1", "b", 0.032266458495966696),  # 1/61 + 1/63 (dense 1, sparse 3); ties a: the larger docid first
        ("q1", "a", 0.032266458495966696),  # 1/61 + 1/63 (sparse 1, dense 3)
        ("q1", "e", 0.016129032258064516),  # 1/62 (dense 2); ties c (sparse 2)
        ("q1", "c", 0.016129032258064516),  # 1/62
        ("q1", "d", 0.015625),  # 1/64 (sparse 4)
        ("q2", "y", 0.03252247488101534),  # 1/62 + 1/61
        ("q2", "x", 0.03252247488101534),  # 1/61 + 1/62
        ("q2", "z", 0.015873015873015872),  # 1/63
        ("q2", "w", 0.015873015873015872),  # 1/63
        ("q3", "n", 0.01639344262295082),  # 1/61 (n is first of the tied pair)
        ("q3", "m", 0.016129032258064516),  # 1/62
    ],
    # RRF, k = 1: 1 / (1 + rank).
    ("rrf", 1): [
        ("q1", "b", 0.75), ("q1", "a", 0.75),  # 1/2 + 1/4
        ("q1", "e", 0.3333333333333333), ("q1", "c", 0.3333333333333333),  # 1/3
        ("q1", "d", 0.2),  # 1/5
        ("q2", "y", 0.8333333333333333), ("q2", "x", 0.8333333333333333),  # 1/2 + 1/3
        ("q2", "z", 0.25), ("q2", "w", 0.25),  # 1/4
        ("q3", "n", 0.5), ("q3", "m", 0.3333333333333333),  # 1/2, 1/3
    ],
    # RBP fusion, p = 0.5: (1 - p) * p ** (rank - 1) = 0.5, 0.25, 0.125, 0.0625 at ranks 1..4.
    ("rbp", 0.5): [
        ("q1", "b", 0.625), ("q1", "a", 0.625),  # 0.5 + 0.125
        ("q1", "e", 0.25), ("q1", "c", 0.25),  # rank 2
        ("q1", "d", 0.0625),  # rank 4
        ("q2", "y", 0.75), ("q2", "x", 0.75),  # 0.5 + 0.25
        ("q2", "z", 0.125), ("q2", "w", 0.125),  # rank 3
        ("q3", "n", 0.5), ("q3", "m", 0.25),
    ],
    # RBP fusion, trectools' default p = 0.8: 0.2, 0.16, 0.128, 0.1024 at ranks 1..4.
    ("rbp", None): [
        ("q1", "b", 0.328), ("q1", "a", 0.328),  # 0.2 + 0.128
        ("q1", "e", 0.16), ("q1", "c", 0.16),
        ("q1", "d", 0.1024),
        ("q2", "y", 0.36), ("q2", "x", 0.36),  # 0.2 + 0.16
        ("q2", "z", 0.128), ("q2", "w", 0.128),
        ("q3", "n", 0.2), ("q3", "m", 0.16),
    ],
    # CombSUM over min-max normalised scores, per query and run: (s - min) / (max - min).
    # q1 sparse: a (3-1)/2 = 1, b = c = (2-1)/2 = 0.5, d 0; dense: b 1, e (0.8-0.5)/0.4 = 0.75, a 0.
    # q2 sparse: x 1, y (4-1)/4 = 0.75, z 0; dense: y 1, x (8-6)/4 = 0.5, w 0.
    # q3 dense: n and m equal, so both 1.
    ("combsum", None): [
        ("q1", "b", 1.5),  # 0.5 + 1
        ("q1", "a", 1.0),  # 1 + 0
        ("q1", "e", 0.75),
        ("q1", "c", 0.5),
        ("q1", "d", 0.0),
        ("q2", "y", 1.75),  # 0.75 + 1
        ("q2", "x", 1.5),  # 1 + 0.5
        ("q2", "z", 0.0), ("q2", "w", 0.0),  # tie: the larger docid first
        ("q3", "n", 1.0), ("q3", "m", 1.0),
    ],
    # CombMNZ: the same sums times the number of runs holding the document.
    ("combmnz", None): [
        ("q1", "b", 3.0),  # 1.5 x 2
        ("q1", "a", 2.0),  # 1 x 2
        ("q1", "e", 0.75),  # x 1
        ("q1", "c", 0.5),
        ("q1", "d", 0.0),
        ("q2", "y", 3.5),  # 1.75 x 2
        ("q2", "x", 3.0),  # 1.5 x 2
        ("q2", "z", 0.0), ("q2", "w", 0.0),
        ("q3", "n", 1.0), ("q3", "m", 1.0),
    ],
    # Borda (Aslam & Montague): c candidates; c - rank + 1 points, (c - n + 1) / 2 each for the candidates a run of
    # n hits lacks.
    # q1: c = 5. sparse (n 4): a 5, c 4, b 3, d 2, e (5-4+1)/2 = 1; dense (n 3): b 5, e 4, a 3, c = d = 1.5.
    # q2: c = 4. sparse: x 4, y 3, z 2, w 1; dense: y 4, x 3, w 2, z 1.
    # q3: c = 2. dense: n 2, m 1; the empty sparse run: (2-0+1)/2 = 1.5 each.
    ("borda", None): [
        ("q1", "b", 8.0), ("q1", "a", 8.0),  # 3 + 5, 5 + 3
        ("q1", "c", 5.5),  # 4 + 1.5
        ("q1", "e", 5.0),  # 1 + 4
        ("q1", "d", 3.5),  # 2 + 1.5
        ("q2", "y", 7.0), ("q2", "x", 7.0),  # 3 + 4, 4 + 3
        ("q2", "z", 3.0), ("q2", "w", 3.0),  # 2 + 1, 1 + 2
        ("q3", "n", 3.5), ("q3", "m", 2.5),  # 1.5 + 2, 1.5 + 1
    ],
}


def frame(rows):
    return pd.DataFrame(rows, columns=["qid", "docid", "score"])


@pytest.mark.parametrize(("method", "param"), list(EXPECTED))
def test_hand_computed(method, param):
    fused = fuse_frames(frame(SPARSE), frame(DENSE), method, param)
    expected = EXPECTED[method, param]
    assert [(q, d) for q, d, _ in fused] == [(q, d) for q, d, _ in expected]
    assert [s for _, _, s in fused] == pytest.approx([s for _, _, s in expected], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("method", ["rrf", "combmnz", "borda"])
def test_blocks_and_cut(method, monkeypatch):
    """Fusing one query per block gives the same run; `hits` keeps each query's top, in that order."""
    whole = fuse_frames(frame(SPARSE), frame(DENSE), method)
    monkeypatch.setattr(fusion, "BLOCK", 1)
    assert fuse_frames(frame(SPARSE), frame(DENSE), method) == whole
    top = fuse_frames(frame(SPARSE), frame(DENSE), method, hits=2)
    expected = frame(EXPECTED[method, 60 if method == "rrf" else None]).groupby("qid").head(2)
    assert [(q, d) for q, d, _ in top] == list(expected[["qid", "docid"]].itertuples(index=False, name=None))


def random_runs(seed: int, queries: int = 60, depth: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two runs over a shared pool with scores on a coarse grid (many ties, within and across runs), ragged
    lengths (one-hit queries among them), queries that only one run has, and hits listed out of rank order."""
    rng = np.random.default_rng(seed)
    frames = []
    for side in range(2):
        rows = []
        for q in range(queries):
            if (q % 7 == 3 and side == 0) or (q % 11 == 5 and side == 1):
                continue  # this run lacks the query
            n = 1 if q % 5 == 0 else int(rng.integers(2, depth + 1))
            docs = rng.choice(2 * depth, n, replace=False)
            scores = np.round(rng.normal(size=n) * 2) / 2 + (5.0 if side else 10.0)
            rows += [(f"q{q}", f"d{doc}", float(score)) for doc, score in zip(docs, scores, strict=True)]
        frames.append(pd.DataFrame(rows, columns=["qid", "docid", "score"]).sample(frac=1.0, random_state=seed))
    return frames[0], frames[1]


def by_query(rows) -> dict[str, list[tuple[str, float]]]:
    fused: dict[str, list[tuple[str, float]]] = {}
    for qid, docid, score in rows:
        fused.setdefault(qid, []).append((docid, score))
    return fused


ORACLE_CASES = [("rrf", 60), ("rrf", 1), ("rrf", 17.5), ("rbp", 0.8), ("rbp", 0.5), ("rbp", 0.99),
                ("combsum", None), ("combmnz", None), ("borda", None)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("method", "value"), ORACLE_CASES)
def test_equals_trectools(method, value, seed):
    """The same ranking as trectools' scores give (ties by docid descending) and bit-identical scores."""
    sparse, dense = random_runs(seed)
    ours = by_query(fuse_frames(sparse, dense, method, value, hits=10**6))
    theirs = trectools_oracle.fuse(sparse, dense, method, value)
    theirs = by_query(theirs.itertuples(index=False, name=None))
    assert sorted(ours) == sorted(theirs)
    for qid, hits in theirs.items():
        assert [docid for docid, _ in ours[qid]] == [docid for docid, _ in hits], (qid, method, value)
        assert [score for _, score in ours[qid]] == [score for _, score in hits], (qid, method, value)


@pytest.mark.parametrize(("method", "value"), [("rrf", 60), ("rbp", 0.9), ("combsum", None)])
def test_depth_past_1000_as_trectools(method, value):
    """rrf and rbp read each run's top 1000 only (a document both runs rank lower is no candidate); combos reads
    all of it."""
    rng = np.random.default_rng(3)
    sparse = pd.DataFrame({"qid": "q", "docid": [f"d{i}" for i in rng.permutation(DEPTH + 150)],
                           "score": np.arange(DEPTH + 150, 0, -1, dtype=float)})
    dense = pd.DataFrame({"qid": "q", "docid": [f"d{i}" for i in rng.permutation(DEPTH + 150)[:DEPTH + 40]],
                          "score": np.arange(DEPTH + 40, 0, -1, dtype=float)})
    ours = fuse_frames(sparse, dense, method, value, hits=10**6)
    theirs = trectools_oracle.fuse(sparse, dense, method, value)
    assert [(d, s) for _, d, s in ours] == list(zip(theirs["docid"], theirs["score"], strict=True))
    assert (len(ours) < DEPTH + 150) == (METHODS[method].hits == "rank")


def test_run_file_exact_scores_and_refusals(tmp_path):
    write_run(tmp_path / "s.trec", {q: [(d, s) for qq, d, s in SPARSE if qq == q] for q in ("q1", "q2")}, "s")
    write_run(tmp_path / "d.trec", {q: [(d, s) for qq, d, s in DENSE if qq == q] for q in ("q1", "q2", "q3")}, "d")
    record = fuse_runs(tmp_path / "s.trec", tmp_path / "d.trec", {"rbp": tmp_path / "f.trec"}, {"rbp": 0.5},
                       tag="x")["rbp"]
    assert record["queries"] == 3 and record["param"] == 0.5
    lines = (tmp_path / "f.trec").read_text().splitlines()
    assert lines[:2] == ["q1 Q0 b 1 0.625 x", "q1 Q0 a 2 0.625 x"] and lines[-1] == "q3 Q0 m 2 0.25 x"
    # Exact scores: RRF's 1/61 + 1/62 and 1/61 + 1/63 (5 decimals apart, 1e-4 relative) survive a round trip.
    main(["fuse", "--method", "rrf", "--sparse", str(tmp_path / "s.trec"), "--dense", str(tmp_path / "d.trec"),
          "--run", str(tmp_path / "rrf.trec")])
    assert read_run(tmp_path / "rrf.trec")["q1"]["b"] == 1 / 61 + 1 / 63  # the default k = 60
    # Several methods in one call (the workflow's): each run is its own method's, whatever their order.
    with pytest.raises(SystemExit):  # --param is one method's
        main(["fuse", "--method", "rrf", "rbp", "--param", "0.5", "--sparse", str(tmp_path / "s.trec"), "--dense",
              str(tmp_path / "d.trec"), "--run", str(tmp_path / "a.trec"), str(tmp_path / "b.trec")])
    with pytest.raises(SystemExit):  # one output per method
        main(["fuse", "--method", "rrf", "rbp", "--sparse", str(tmp_path / "s.trec"), "--dense",
              str(tmp_path / "d.trec"), "--run", str(tmp_path / "a.trec")])
    main(["fuse", "--method", "combsum", "rrf", "--sparse", str(tmp_path / "s.trec"), "--dense",
          str(tmp_path / "d.trec"), "--run", str(tmp_path / "sum.trec"), str(tmp_path / "rrf2.trec")])
    assert read_run(tmp_path / "rrf2.trec") == read_run(tmp_path / "rrf.trec")
    assert read_run(tmp_path / "sum.trec")["q1"]["a"] == 1.0 + 0.0  # sparse max (1) + dense min (0), min-max
    with pytest.raises(ValueError, match="takes no parameter"):
        fuse_runs(tmp_path / "s.trec", tmp_path / "d.trec", {"borda": tmp_path / "f.trec"}, {"borda": 3})
    (tmp_path / "dup.trec").write_text("q1 Q0 a 1 2.0 s\nq1 Q0 b 2 1.5 s\nq1 Q0 a 3 1.0 s\n")
    with pytest.raises(InputFormatError, match=r"dup\.trec.*docid a twice for query q1"):
        fuse_runs(tmp_path / "s.trec", tmp_path / "dup.trec", {"rrf": tmp_path / "f.trec"})


def tuning_example(tmp_path, relevant: str):
    """Per query: X at sparse rank 1 only, A at dense rank 1 only, Y at rank 3 in both runs. RRF scores X and A
    1/(k+1), Y 2/(k+3): Y ranks first for k > 1, else third (X, A, then Y). RBP scores X and A (1-p), Y 2(1-p)p^2:
    Y first for p > 0.707, else third (at p = 0.5 Y ties the rank-2 documents at 0.25 and is the first of them)."""
    sparse, dense = {}, {}
    for q in range(3):
        sparse[f"q{q}"] = [(f"x{q}", 9.0), (f"s{q}", 8.0), (f"y{q}", 7.0)]
        dense[f"q{q}"] = [(f"a{q}", 9.0), (f"e{q}", 8.0), (f"y{q}", 7.0)]
    write_run(tmp_path / "s.trec", sparse, "s")
    write_run(tmp_path / "d.trec", dense, "d")
    write_qrels(tmp_path / "qrels.txt", {f"q{q}": {f"{relevant}{q}": 1} for q in range(3)})


@pytest.mark.parametrize(("method", "grid", "relevant", "curve"), [
    ("rrf", (0.5, 10.0), "x", (1.0, 0.5)),  # X first at k 0.5 (ahead of A: larger docid), second at 10
    ("rrf", (0.5, 10.0), "y", (1 / 3, 1.0)),  # Y third at k 0.5, first at 10
    ("rbp", (0.5, 0.9), "x", (1.0, 0.5)),
    ("rbp", (0.5, 0.9), "y", (1 / 3, 1.0))])
def test_tuning_picks_the_best(tmp_path, method, grid, relevant, curve):
    tuning_example(tmp_path, relevant)
    choice = tune_methods(tmp_path / "s.trec", tmp_path / "d.trec", tmp_path / "qrels.txt",
                          {method: (tmp_path / "curve.tsv", tmp_path / "choice.json")}, "RR@10", grid)[method]
    assert choice["value"] == grid[curve.index(1.0)] and choice["RR@10"] == 1.0
    assert json.loads((tmp_path / "choice.json").read_text()) == choice
    assert (tmp_path / "curve.tsv").read_text().splitlines() == [f"{choice['parameter']}\tRR@10"] + [
        f"{value:g}\t{rr:.6f}" for value, rr in zip(grid, curve, strict=True)]


def test_curve_equals_evaluating_the_fused_file(tmp_path):
    """Each grid point's value is what pipeline.evaluate gives the run `fuse` writes with that parameter."""
    tuning_example(tmp_path, "y")
    main(["tune", "--method", "rrf", "--sparse", str(tmp_path / "s.trec"), "--dense", str(tmp_path / "d.trec"),
          "--qrels", str(tmp_path / "qrels.txt"), "--measure", "nDCG@2", "--grid", "0.5", "3", "1",
          "--curve", str(tmp_path / "curve.tsv"), "--choice", str(tmp_path / "choice.json")])
    qrels = {f"q{q}": {f"y{q}": 1} for q in range(3)}
    assert json.loads((tmp_path / "choice.json").read_text())["value"] == 3  # k 3 and 1 both rank Y first: the first
    for line in (tmp_path / "curve.tsv").read_text().splitlines()[1:]:
        k, value = line.split("\t")
        fuse_runs(tmp_path / "s.trec", tmp_path / "d.trec", {"rrf": tmp_path / "f.trec"}, {"rrf": float(k)})
        evaluated = score_run(read_run(tmp_path / "f.trec"), qrels, ["nDCG@2"])["all"]["nDCG@2"]
        assert float(value) == pytest.approx(evaluated, abs=1e-6), k
    main(["fuse", "--method", "rrf", "--param-file", str(tmp_path / "choice.json"), "--sparse",
          str(tmp_path / "s.trec"), "--dense", str(tmp_path / "d.trec"), "--run", str(tmp_path / "f.trec")])
    assert read_run(tmp_path / "f.trec")["q0"]["y0"] == 2 / 6  # k = 3: 1/(3 + 3) + 1/(3 + 3)
    with pytest.raises(ValueError, match=r"tuned for 'rrf', not one of \['rbp'\]"):
        main(["fuse", "--method", "rbp", "--param-file", str(tmp_path / "choice.json"), "--sparse",
              str(tmp_path / "s.trec"), "--dense", str(tmp_path / "d.trec"), "--run", str(tmp_path / "f.trec")])
