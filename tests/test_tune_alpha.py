import json
import random

import pytest

from pipeline.data.sample import sample_queries
from pipeline.evaluate import score_run
from pipeline.formats import read_qrels, read_queries, write_id_text, write_qrels, write_run
from pipeline.fusion import fuse
from pipeline.tune_alpha import tune_alpha


def test_sweep_equals_fusing_and_evaluating_each_alpha(tmp_path):
    rng = random.Random(2)
    docs = [f"d{i}" for i in range(60)]
    qrels = {f"q{q}": {d: 1 for d in rng.sample(docs, 2)} for q in range(40)}
    qrels["unretrieved"] = {"d1": 1}
    sparse = {q: {d: round(rng.uniform(0, 25), 2) for d in rng.sample(docs, 30)} for q in qrels if q != "unretrieved"}
    dense = {q: {d: round(rng.uniform(60, 75), 1) for d in rng.sample(docs, 30)} for q in sparse}
    write_run(tmp_path / "s.trec", {q: sorted(h.items(), key=lambda x: -x[1]) for q, h in sparse.items()}, "s")
    write_run(tmp_path / "d.trec", {q: sorted(h.items(), key=lambda x: -x[1]) for q, h in dense.items()}, "d")
    write_qrels(tmp_path / "qrels.txt", qrels)
    choice = tune_alpha(tmp_path / "s.trec", tmp_path / "d.trec", tmp_path / "qrels.txt", tmp_path / "curve.tsv",
                        tmp_path / "alpha.json", 0.0, 1.0, 0.05)
    curve = [line.split("\t") for line in (tmp_path / "curve.tsv").read_text().splitlines()[1:]]
    assert len(curve) == 21
    for alpha, value in curve[::4]:
        fused = fuse(sparse, dense, float(alpha))
        expected = score_run({q: dict(h) for q, h in fused.items()}, qrels, ["RR@10"])["all"]["RR@10"]
        assert float(value) == pytest.approx(expected, abs=1e-6), alpha
    best = max(float(v) for _, v in curve)
    assert choice["RR@10"] == pytest.approx(best) and json.loads((tmp_path / "alpha.json").read_text()) == choice
    assert choice["alpha"] == min(float(a) for a, v in curve if float(v) == best)  # ties go to the smallest


def test_sample_is_seeded_judged_and_capped(tmp_path):
    write_id_text(tmp_path / "q.tsv", [(str(i), f"query {i}") for i in range(50)])
    write_qrels(tmp_path / "qrels.txt", {str(i): {"d": 1 if i % 5 else 0} for i in range(50)})
    def sample(n, name):
        return sample_queries(tmp_path / "q.tsv", tmp_path / "qrels.txt", n, 1, tmp_path / f"{name}.tsv",
                              tmp_path / f"{name}.txt")

    assert sample(10, "a") == 10
    sample(10, "b")
    assert read_queries(tmp_path / "a.tsv") == read_queries(tmp_path / "b.tsv")
    assert all(int(q) % 5 for q in read_queries(tmp_path / "a.tsv"))  # only queries with a relevant passage
    assert set(read_qrels(tmp_path / "a.txt")) == set(read_queries(tmp_path / "a.tsv"))
    assert sample(500, "c") == 40


@pytest.mark.parametrize("measure", ["nDCG@10", "R@20", "AP", "RR(rel=2)@10"])
def test_any_measure_sweep_equals_fusing_and_evaluating_each_alpha(tmp_path, measure):
    """Measures other than RR@k rank each alpha's fused candidates and score them with pipeline.evaluate."""
    rng = random.Random(5)
    docs = [f"d{i:02d}" for i in range(60)]
    qrels = {f"q{q}": {d: rng.choice([-1, 0, 1, 2]) for d in rng.sample(docs, 6)} for q in range(30)}
    # Hit lists of different lengths, so that fusion's grid has padding cells.
    sparse = {q: {d: round(rng.uniform(0, 25), 1) for d in rng.sample(docs, rng.randint(5, 30))} for q in qrels}
    dense = {q: {d: round(rng.uniform(60, 75), 1) for d in rng.sample(docs, rng.randint(5, 30))} for q in qrels}
    write_run(tmp_path / "s.trec", {q: sorted(h.items(), key=lambda x: -x[1]) for q, h in sparse.items()}, "s")
    write_run(tmp_path / "d.trec", {q: sorted(h.items(), key=lambda x: -x[1]) for q, h in dense.items()}, "d")
    write_qrels(tmp_path / "qrels.txt", qrels)
    choice = tune_alpha(tmp_path / "s.trec", tmp_path / "d.trec", tmp_path / "qrels.txt", tmp_path / "curve.tsv",
                        tmp_path / "alpha.json", 0.0, 1.0, 0.1, measure=measure)
    curve = [line.split("\t") for line in (tmp_path / "curve.tsv").read_text().splitlines()]
    assert curve[0] == ["alpha", measure] and choice["measure"] == measure
    values = [float(value) for _, value in curve[1:]]
    assert len(set(values)) > 1  # the grid matters, so the comparison below can fail
    for alpha, value in curve[1::3]:
        fused = fuse(sparse, dense, float(alpha))
        expected = score_run({q: dict(h) for q, h in fused.items()}, qrels, [measure])["all"][measure]
        assert float(value) == pytest.approx(expected, abs=1e-6), alpha
    assert choice[measure] == pytest.approx(max(values), abs=1e-6)
