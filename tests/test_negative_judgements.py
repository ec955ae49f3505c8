"""Negative relevance (TREC's -1 for junk) is non-relevant everywhere, as for trec_eval: evaluation,
the alpha-tuning sample and doc2query's training pairs (BM25 negatives: tests/test_negatives.py)."""

import ir_measures
import pytest

from pipeline.data.sample import sample_queries
from pipeline.doc2query.train import read_pairs
from pipeline.evaluate import score_run
from pipeline.formats import read_queries, write_id_text, write_qrels

MEASURES = ["RR@10", "nDCG@10", "R@1000", "R(rel=2)@1000", "P@10", "AP"]
# q1's junk passage is ranked first, above its relevant ones; q2 has nothing but junk.
RUN = {"q1": {"junk": 4.0, "rel2": 3.0, "other": 2.0, "rel1": 1.0}, "q2": {"junk": 1.0, "x": 0.5}}


def judged(junk: int) -> dict[str, dict[str, int]]:
    return {"q1": {"junk": junk, "rel2": 2, "rel1": 1, "non": 0}, "q2": {"junk": junk}}


def test_a_junk_judgement_scores_as_non_relevant():
    ours = score_run(RUN, judged(-1), MEASURES)
    assert ours == score_run(RUN, judged(0), MEASURES)
    # By hand: relevant at ranks 2 (rel 2) and 4 (rel 1); nDCG = (2/log2 3 + 1/log2 5) / (2 + 1/log2 3).
    assert ours["q1"] == pytest.approx({"RR@10": 0.5, "nDCG@10": 0.6433224, "R@1000": 1.0, "R(rel=2)@1000": 1.0,
                                        "P@10": 0.2, "AP": 0.5})
    # A query judged only non-relevant scores 0 and still counts in the mean (trec_eval -c).
    assert ours["q2"] == dict.fromkeys(MEASURES, 0.0)
    assert ours["all"]["nDCG@10"] == pytest.approx(0.6433224 / 2)
    # ir_measures (its msmarco provider for RR@10, pytrec_eval for the rest) agrees per query.
    parsed = {ir_measures.parse_measure(name): name for name in MEASURES}
    theirs = list(ir_measures.iter_calc(list(parsed), judged(-1), RUN))
    assert len(theirs) == len(MEASURES) * len(RUN)
    for metric in theirs:
        assert ours[metric.query_id][parsed[metric.measure]] == pytest.approx(metric.value), metric


def test_alpha_sample_skips_queries_judged_only_non_relevant(tmp_path):
    write_id_text(tmp_path / "q.tsv", [("q1", "one"), ("q2", "two"), ("q3", "three"), ("q4", "four")])
    write_qrels(tmp_path / "qrels.txt", {"q1": {"a": 1}, "q2": {"a": 0, "b": -1}, "q3": {"a": -1}, "q4": {"b": 2}})
    count = sample_queries(tmp_path / "q.tsv", tmp_path / "qrels.txt", 10, 1, tmp_path / "s.tsv", tmp_path / "s.txt")
    assert count == 2
    assert list(read_queries(tmp_path / "s.tsv")) == ["q1", "q4"]


def test_doc2query_pairs_are_relevant_judgements_only(tmp_path):
    write_id_text(tmp_path / "c.tsv", [("a", "alpha"), ("b", "beta"), ("c", "gamma")])
    write_id_text(tmp_path / "q.tsv", [("q1", "one"), ("q2", "two")])
    write_qrels(tmp_path / "qrels.txt", {"q1": {"a": 1, "b": -1}, "q2": {"c": 0, "b": 2}})
    pairs, _, passages = read_pairs(tmp_path / "c.tsv", tmp_path / "q.tsv", tmp_path / "qrels.txt")
    assert pairs == [("q1", "a"), ("q2", "b")] and set(passages) == {"a", "b"}
