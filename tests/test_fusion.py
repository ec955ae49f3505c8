import itertools
import json
import math
import random

import pytest

from pipeline import fusion
from pipeline.formats import InputFormatError, read_run, write_run
from pipeline.fusion import fuse, fuse_arrays, fuse_runs
from pipeline.run_arrays import encode_runs, run_frame
from pipeline.sparse.jvm import import_pyserini
from tests.conftest import shared_data


def reference(sparse_hits: dict, dense_hits: dict, alpha: float, k: int = 1000, normalization=False,
              weight_on_dense=False) -> list[tuple[str, float]]:
    """Eq. 7 for one query, written straight from the definition."""
    smin = min(sparse_hits.values()) if sparse_hits else 0.0
    smax = max(sparse_hits.values()) if sparse_hits else 1.0
    dmin = min(dense_hits.values()) if dense_hits else 0.0
    dmax = max(dense_hits.values()) if dense_hits else 1.0
    fused = []
    for doc in set(sparse_hits) | set(dense_hits):
        s, d = sparse_hits.get(doc, smin), dense_hits.get(doc, dmin)
        if normalization:
            s = (s - (smin + smax) / 2) / (smax - smin)
            d = (d - (dmin + dmax) / 2) / (dmax - dmin)
        fused.append((doc, s + alpha * d if weight_on_dense else alpha * s + d))
    # Ties by docid descending, as trec_eval orders them.
    by_docid = sorted(fused, key=lambda hit: hit[0], reverse=True)
    return sorted(by_docid, key=lambda hit: -hit[1])[:k]


def check(sparse, dense, alpha, **options):
    ours = fuse(sparse, dense, alpha, **options)
    for qid in set(sparse) | set(dense):
        expected = reference(sparse.get(qid, {}), dense.get(qid, {}), alpha, **options)
        fused = ours.get(qid, [])  # a query without any hit has no line in a run
        assert [d for d, _ in fused] == [d for d, _ in expected], qid
        assert [s for _, s in fused] == pytest.approx([s for _, s in expected], abs=1e-9)


def test_missing_from_either_side_both_and_single_run_queries():
    sparse = {"q1": {"a": 10.0, "b": 8.0, "c": 5.0}, "q2": {"x": 3.0}, "only_sparse": {"s": 1.0}}
    dense = {"q1": {"b": 0.9, "d": 0.7, "a": 0.2}, "q2": {"y": 0.5, "x": 0.4}, "only_dense": {"t": 2.0}}
    check(sparse, dense, 0.1)
    fused = fuse(sparse, dense, 0.1)
    # c is missing from dense: it takes dense's minimum for q1 (0.2); d takes sparse's minimum (5.0).
    assert dict(fused["q1"])["c"] == pytest.approx(0.1 * 5.0 + 0.2)
    assert dict(fused["q1"])["d"] == pytest.approx(0.1 * 5.0 + 0.7)
    # A query present in one run only: the other side counts as an empty list (minimum 0).
    assert fused["only_sparse"] == [("s", pytest.approx(0.1))] and fused["only_dense"] == [("t", 2.0)]


def test_ties_are_broken_by_docid_descending_and_k_truncates():
    sparse = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    dense = {"q": {"a": 0.0, "b": 0.0, "c": 0.0}}
    assert [d for d, _ in fuse(sparse, dense, 1.0)["q"]] == ["c", "b", "a"]
    assert [d for d, _ in fuse(sparse, dense, 1.0, k=2)["q"]] == ["c", "b"]


def test_ties_follow_string_order_of_numeric_docids():
    # trec_eval compares docids as strings: "9" > "5" > "10" > "1".
    assert [d for d, _ in fuse({"q": {"1": 2.0, "10": 2.0, "9": 2.0}}, {"q": {"5": 0.0}}, 1.0)["q"]] == \
        ["9", "5", "10", "1"]  # all four score 2.0 (missing scores take the run minimum)


@pytest.mark.parametrize("seed", range(5))
def test_heavy_ties_mixed_docids_and_cut_offs(seed, monkeypatch):
    """Scores from a handful of values, docids of mixed length and kind: the order and the top-k cut are
    the reference's (score, then docid descending as strings)."""
    rng = random.Random(seed)
    docs = [str(i) for i in range(0, 120, 7)] + [f"d{i}" for i in range(25)] + ["D", "doc-Ω"]
    sparse = {f"q{q}": {d: float(rng.choice([0, 1, 2])) for d in rng.sample(docs, rng.randint(0, 20))}
              for q in range(15)}
    dense = {f"q{q}": {d: rng.choice([-1.0, 0.0, 0.5]) for d in rng.sample(docs, rng.randint(1, 20))}
             for q in range(5, 20)}
    for k in (1, 5, 1000):
        check(sparse, dense, rng.choice([0.0, 0.5, 1.0]), k=k)
    monkeypatch.setattr(fusion, "BLOCK", 4)  # several blocks, queries of one side only among them
    check(sparse, dense, 0.5, k=5)

def test_scores_one_ulp_apart_and_signed_zeros():
    """Ranking sorts integer keys that drop a float's lowest bits: scores differing only there still rank by
    score, and 0.0 ties with -0.0 (broken by docid, as trec_eval does)."""
    above_one = math.nextafter(1.0, 2.0)
    check({"q": {"a": above_one, "b": 1.0, "c": math.nextafter(1.0, 0.0)}}, {"q": {"d": 0.0}}, 1.0)
    # alpha 0 times a negative sparse score is -0.0; 0.0 and -0.0 are one score.
    sparse = {"q": {"a": -1.0, "b": -2.0, "c": -0.5, "e": -3.0}, "p": {"a": -0.0, "b": 0.0}}
    dense = {"q": {"a": 0.0, "b": -0.0, "c": -0.0, "d": 0.0}, "p": {"b": -0.0, "a": 0.0}}
    assert [d for d, _ in fuse(sparse, dense, 0.0)["q"]] == ["e", "d", "c", "b", "a"]
    check(sparse, dense, 0.0)



def test_interleaved_queries_and_repeated_docids():
    sparse = run_frame({"q1": {"a": 3.0, "b": 2.0}, "q2": {"a": 1.0, "c": 0.5}})
    interleaved = sparse.iloc[[0, 2, 1, 3]]  # q1, q2, q1, q2: hits of a query need not be contiguous
    dense = run_frame({"q2": {"c": 0.9}, "q1": {"b": 0.4}})
    assert fuse(interleaved, dense, 0.5) == fuse(sparse, dense, 0.5)
    repeated = run_frame({"q1": {"a": 3.0, "b": 2.0}}).iloc[[0, 1, 0]]
    with pytest.raises(ValueError, match="the sparse run lists docid a twice for query q1"):
        fuse(repeated, dense, 0.5)
    with pytest.raises(ValueError, match="the dense run lists docid a twice for query q1"):
        fuse(dense, repeated, 0.5)


def test_one_query_at_a_time_equals_all_at_once(monkeypatch):
    """fuse_runs times queries one by one (a served system's view) on RunArrays slices: they give the lists
    the batch gives."""
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(40)]
    sparse = {f"q{q}": {d: round(rng.uniform(0, 9), 1) for d in rng.sample(docs, 15)} for q in range(12)}
    dense = {f"q{q}": {d: round(rng.uniform(60, 70), 1) for d in rng.sample(docs, 15)} for q in range(12)}
    check(sparse, dense, 0.3, k=20)  # every query has 15 hits on each side: the grid is filled by reshaping
    sparse_arrays, dense_arrays, vocabulary = encode_runs(run_frame(sparse), run_frame(dense))
    together = fuse_arrays(sparse_arrays, dense_arrays, vocabulary, 0.3, k=20)
    for row, qid in enumerate(together.qids):
        row = list(sparse_arrays.qids).index(qid)
        alone = fuse_arrays(sparse_arrays.slice(row, row + 1), dense_arrays.slice(row, row + 1), vocabulary, 0.3,
                            k=20)
        lo, hi = together.offsets[row], together.offsets[row + 1]
        assert alone.qids.tolist() == [qid] and alone.docids.tolist() == together.docids[lo:hi].tolist()
        assert alone.scores.tolist() == together.scores[lo:hi].tolist()
    monkeypatch.setattr(fusion, "BLOCK", 5)  # blocks of queries, as views of runs in the same topic order
    blocks = fuse_arrays(sparse_arrays, dense_arrays, vocabulary, 0.3, k=20)
    assert blocks.qids.tolist() == together.qids.tolist() and blocks.offsets.tolist() == together.offsets.tolist()
    assert blocks.docids.tolist() == together.docids.tolist() and blocks.scores.tolist() == together.scores.tolist()


def test_empty_lists_and_options():
    assert fuse({}, {}, 0.5) == {}
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(30)]
    sparse = {f"q{q}": {d: rng.uniform(0, 20) for d in rng.sample(docs, 12)} for q in range(20)}
    dense = {f"q{q}": {d: round(rng.uniform(60, 70), 1) for d in rng.sample(docs, 12)} for q in range(20)}
    for alpha, normalization, weight_on_dense in itertools.product([0.0, 0.24, 1.5], [False, True], [False, True]):
        check(sparse, dense, alpha, k=10, normalization=normalization, weight_on_dense=weight_on_dense)


def test_identical_to_pyserini_hybrid_on_real_peer_runs(tmp_path):
    sparse = read_run(shared_data("peer-runs", "BM25.dl19.trec"))
    dense = read_run(shared_data("peer-runs", "D_BERT_KD_TASB.dl19.trec"))
    hybrid = import_pyserini("pyserini.search.hybrid")
    faiss_module = import_pyserini("pyserini.search.faiss")
    hit = faiss_module.DenseSearchResult
    for normalization, weight_on_dense in [(False, False), (True, False), (False, True)]:
        ours = fuse(sparse, dense, 0.12, k=100, normalization=normalization, weight_on_dense=weight_on_dense)
        for qid in sparse:
            theirs = hybrid.HybridSearcher._hybrid_results(
                [hit(d, s) for d, s in dense[qid].items()], [hit(d, s) for d, s in sparse[qid].items()], 0.12, 100,
                normalization, weight_on_dense)
            # Same scores for the same documents; pyserini orders equal scores arbitrarily (set order).
            assert {h.docid: h.score for h in theirs} == pytest.approx(dict(ours[qid]), abs=1e-9)
            assert [h.score for h in theirs] == pytest.approx([s for _, s in ours[qid]], abs=1e-9)


def test_fuse_runs_names_the_file_with_a_repeated_docid(tmp_path):
    write_run(tmp_path / "s.trec", {"q": [("a", 3.0), ("b", 1.0)]}, "s")
    (tmp_path / "d.trec").write_text("q Q0 b 1 0.5 d\nq Q0 c 2 0.4 d\nq Q0 b 3 0.3 d\n")
    with pytest.raises(InputFormatError, match=r"d\.trec: expected each docid once per query .*docid b twice"):
        fuse_runs(tmp_path / "s.trec", tmp_path / "d.trec", tmp_path / "h.trec", 0.1)
    assert not (tmp_path / "h.trec").exists()


def test_fuse_runs_writes_run_and_latency(tmp_path):
    write_run(tmp_path / "s.trec", {"q": [("a", 3.0), ("b", 1.0)]}, "s")
    write_run(tmp_path / "d.trec", {"q": [("b", 0.5), ("c", 0.4)]}, "d")
    (tmp_path / "s.latency.json").write_text(json.dumps({"latency_ms_median": 5.0}))
    (tmp_path / "d.latency.json").write_text(json.dumps({"latency_ms_median": 3.0}))
    record = fuse_runs(tmp_path / "s.trec", tmp_path / "d.trec", tmp_path / "h.trec", 0.1)
    assert (tmp_path / "h.trec").read_text() == "q Q0 a 1 0.700000 hybrid\nq Q0 b 2 0.600000 hybrid\n" \
                                                "q Q0 c 3 0.500000 hybrid\n"  # the format of pipeline.formats.write_run
    assert record["latency_ms_median"] == pytest.approx(5.0 + record["fusion_ms_median"], abs=1e-3)
    assert record["sequential_ms_median"] == pytest.approx(8.0 + record["fusion_ms_median"], abs=1e-3)
