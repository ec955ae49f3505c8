import json

import pytest

from pipeline.evaluate import score_run
from pipeline.io import read_qrels, read_run, write_id_text, write_qrels
from pipeline.sparse.index import build_bm25_index
from pipeline.sparse.search import bm25_search, latency_path
from tests.conftest import shared_data

DOCS = {
    "d1": "the quick brown fox jumps over the lazy dog",
    "d2": "a lazy afternoon with a sleepy dog",
    "d3": "foxes are quick and clever animals",
    "d4": "stock markets fell sharply on monday",
    "7": "query seven is also a document about markets",
}


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("bm25")
    write_id_text(root / "collection.tsv", DOCS.items())
    manifest = build_bm25_index(root / "collection.tsv", root / "index", threads=2)
    return root, manifest


def test_index_counts_every_document_and_cleans_up(tiny_index):
    root, manifest = tiny_index
    assert manifest["documents"] == len(DOCS)
    assert sorted(p.name for p in (root / "index").iterdir()) == ["lucene", "manifest.json"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_search_ranks_lexical_matches_and_removes_query_docs(tiny_index, tmp_path):
    root, _ = tiny_index
    queries = tmp_path / "queries.tsv"
    write_id_text(queries, [("1", "quick fox"), ("7", "markets")])
    timing = bm25_search(root / "index", queries, tmp_path / "run.trec", hits=10, threads=2, latency_queries=2)
    run = read_run(tmp_path / "run.trec")
    assert max(run["1"], key=run["1"].get) in {"d1", "d3"} and "d4" not in run["1"]
    assert set(run["7"]) == {"7", "d4"}
    bm25_search(root / "index", queries, tmp_path / "run2.trec", hits=10, remove_query=True, latency_queries=0)
    assert set(read_run(tmp_path / "run2.trec")["7"]) == {"d4"}
    saved = json.loads(latency_path(tmp_path / "run.trec").read_text())
    assert saved == timing and saved["queries"] == 2 and saved["latency_queries"] == 2


def test_k1_b_change_scores(tiny_index, tmp_path):
    root, _ = tiny_index
    queries = tmp_path / "queries.tsv"
    write_id_text(queries, [("1", "lazy dog")])
    bm25_search(root / "index", queries, tmp_path / "a.trec", k1=0.9, b=0.4, latency_queries=0)
    bm25_search(root / "index", queries, tmp_path / "b.trec", k1=0.82, b=0.68, latency_queries=0)
    assert read_run(tmp_path / "a.trec") != read_run(tmp_path / "b.trec")


@pytest.mark.realdata
def test_scifact_reproduces_pyserini_beir_flat(tmp_path):
    """Anserini BM25 (k1 0.9, b 0.4, title + text) on SciFact test: pyserini's published BEIR figures."""
    from pipeline.data.beir import beir_source
    from pipeline.data.prepare import prepare_data

    source = beir_source("scifact", shared_data("scifact"), tmp_path / "downloads", ["test"])
    prepare_data(source, tmp_path / "scifact", ["test"])
    build_bm25_index(tmp_path / "scifact" / "collection.tsv", tmp_path / "index", threads=2)
    bm25_search(tmp_path / "index", tmp_path / "scifact" / "queries.test.tsv", tmp_path / "run.trec",
                hits=1000, threads=2, remove_query=True, latency_queries=50)
    means = score_run(read_run(tmp_path / "run.trec"), read_qrels(tmp_path / "scifact" / "qrels.test.txt"),
                      ["nDCG@10", "R@100", "R@1000"])["all"]
    assert means["nDCG@10"] == pytest.approx(0.6789, abs=0.001)
    assert means["R@100"] == pytest.approx(0.9253, abs=0.001)
    assert means["R@1000"] == pytest.approx(0.9767, abs=0.001)


def test_write_qrels_is_trec_format(tmp_path):
    write_qrels(tmp_path / "q.txt", {"1": {"a": 2}})
    assert (tmp_path / "q.txt").read_text() == "1 0 a 2\n"
