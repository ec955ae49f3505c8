import random

import pytest
import pytrec_eval

from pipeline.evaluate import evaluate_run, read_means, score_run
from pipeline.formats import InputFormatError, read_qrels, read_run
from tests.conftest import shared_data


def test_trec_eval_tie_break_and_cutoffs():
    # trec_eval ranks equal scores by docid in reverse order: "x" is ranked before "a".
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}, "q3": {"z": 1}}
    run = {"q1": {"a": 1.0, "x": 1.0}, "q2": {"c": 3.0, "b": 2.0, "n": 1.0}, "other": {"a": 1.0}}
    table = score_run(run, qrels, ["RR@1", "RR@10", "R@1", "R(rel=2)@2", "nDCG@10"])
    assert table["q1"]["RR@1"] == 0.0 and table["q1"]["RR@10"] == 0.5
    assert table["q2"]["R@1"] == 0.5 and table["q2"]["R(rel=2)@2"] == 1.0
    assert table["q3"] == {"RR@1": 0.0, "RR@10": 0.0, "R@1": 0.0, "R(rel=2)@2": 0.0, "nDCG@10": 0.0}
    assert "other" not in table  # unjudged queries are ignored, missing ones count 0 (trec_eval -c)
    assert table["all"]["RR@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_rr_cutoff_matches_trec_eval_recip_rank_on_random_runs():
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(40)]
    qrels = {f"q{i}": {d: rng.choice([0, 1, 2]) for d in rng.sample(docs, 6)} for i in range(50)}
    # Coarse scores make many ties, which is where file order and trec_eval order disagree.
    run = {q: {d: float(rng.randint(0, 5)) for d in rng.sample(docs, 30)} for q in qrels}
    ours = score_run(run, qrels, ["RR@10"])
    full = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
    for qid in qrels:
        expected = full[qid]["recip_rank"] if full[qid]["recip_rank"] >= 0.1 else 0.0
        assert ours[qid]["RR@10"] == expected


def test_unknown_measure_is_refused():
    with pytest.raises(ValueError, match="needs a cutoff"):
        score_run({}, {"q": {"d": 1}}, ["nDCG"])


def test_peer_bm25_dl19_gives_published_ndcg(tmp_path):
    run = shared_data("peer-runs", "BM25.dl19.trec")
    qrels = shared_data("msmarco-dl-mini", "qrels.dl19-passage.txt")
    out = tmp_path / "metrics.tsv"
    means = evaluate_run(run, qrels, ["nDCG@10", "R(rel=2)@1000"], out)
    assert round(means["nDCG@10"], 4) == 0.5058
    assert read_means(out) == pytest.approx(means, abs=1e-6)
    assert len(out.read_text().splitlines()) == 1 + len(read_qrels(qrels)) + 1
    assert set(read_run(run)) <= set(read_qrels(qrels))


@pytest.mark.parametrize("score", ["nan", "inf"])
def test_run_with_a_non_finite_score_is_refused(tmp_path, score):
    """The fault probe: a NaN beside the relevant document turned the query's RR@10 from 1.0 into 0.5."""
    (tmp_path / "qrels.txt").write_text("q1 0 rel 1\n")
    run = tmp_path / "run.trec"
    run.write_text(f"q1 Q0 rel 1 2.0 t\nq1 Q0 other 2 {score} t\n")
    with pytest.raises(InputFormatError, match=r"run.trec, line 2: expected a finite score"):
        evaluate_run(run, tmp_path / "qrels.txt", ["RR@10"], tmp_path / "metrics.tsv")
    assert not (tmp_path / "metrics.tsv").exists()
