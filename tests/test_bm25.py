import json
import random
import string
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.evaluate import score_run
from pipeline.formats import InputFormatError, read_qrels, read_queries, read_run, write_id_text, write_qrels, write_run
from pipeline.sparse.index import build_bm25_index, lucene_dir
from pipeline.sparse.search import bm25_search, halfway_scores, latency_path, query_blocks, round_half_even
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


# Not in qid order (Anserini writes queries sorted by qid, UTF-16 order: the emoji before "！"), a
# tab inside a text (Anserini's reader would cut it there), a stopword-only query without hits, and
# query 7 whose best hit is document 7.
QUERIES = ("b\tlazy dog\n10\tquick\tfox\n9\tdog\n\U0001F600\tfox dog\n\uFF01\tstock markets\nA\tthe\n"
           "7\tdocument markets\n")


def pyserini_run(index, queries_path, run_path, *, k1, b, hits, remove_query, tag):
    """The reference, what the stage wrote before issue 13: pyserini's LuceneSearcher hits, then write_run."""
    from pipeline.sparse.jvm import import_pyserini

    searcher = import_pyserini("pyserini.search.lucene").LuceneSearcher(str(lucene_dir(index)))
    searcher.set_bm25(k1, b)
    ranked = {qid: [(hit.docid, hit.score) for hit in searcher.search(text, k=hits)
                    if not (remove_query and hit.docid == qid)] for qid, text in read_queries(queries_path).items()}
    searcher.close()
    write_run(run_path, ranked, tag)


@pytest.mark.parametrize("settings, threads", [
    ({"k1": 0.9, "b": 0.4, "hits": 10, "remove_query": False, "tag": "bm25"}, 2),
    ({"k1": 0.82, "b": 0.68, "hits": 3, "remove_query": True, "tag": "d2q"}, 1),
    ({"k1": 1.2, "b": 0.75, "hits": 1, "remove_query": True, "tag": "x"}, 2),
])
def test_run_is_pyserini_searchers_byte_for_byte(tiny_index, tmp_path, settings, threads):
    root, _ = tiny_index
    queries = tmp_path / "queries.tsv"
    queries.write_text(QUERIES, encoding="utf-8")
    bm25_search(root / "index", queries, tmp_path / "run.trec", threads=threads, latency_queries=1, **settings)
    pyserini_run(root / "index", queries, tmp_path / "reference.trec", **settings)
    ours = (tmp_path / "run.trec").read_text(encoding="utf-8")
    assert ours == (tmp_path / "reference.trec").read_text(encoding="utf-8")
    lines = [line.split() for line in ours.splitlines()]
    assert {fields[5] for fields in lines} == {settings["tag"]}
    counts = Counter(fields[0] for fields in lines)
    assert max(counts.values()) == min(settings["hits"], 3)  # "fox dog" matches 3 documents
    # The queries file's order; "A" has no hits, nor has 7 when its one hit is itself.
    assert list(counts) == ["b", "10", "9", "\U0001F600", "\uFF01"] + (["7"] if counts["7"] else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queries.tsv", "reference.trec", "run.latency.json",
                                                          "run.trec"]  # no scratch left


def test_remove_query_drops_the_hit_after_searching_hits(tiny_index, tmp_path):
    """pyserini's --remove-query: search `hits`, then drop the query's own document (not hits + 1)."""
    root, _ = tiny_index
    queries = tmp_path / "queries.tsv"
    write_id_text(queries, [("7", "document markets")])
    for hits, remove, expected in [(1, False, ["7"]), (1, True, []), (2, False, ["7", "d4"]), (2, True, ["d4"])]:
        bm25_search(root / "index", queries, tmp_path / "run.trec", hits=hits, remove_query=remove, latency_queries=0)
        assert list(read_run(tmp_path / "run.trec").get("7", {})) == expected, (hits, remove)


def test_a_query_anserini_fails_on_is_an_error_not_a_gap(tiny_index, tmp_path):
    """SearchCollection prints a failing query's stack trace and leaves the query out of its run."""
    root, _ = tiny_index
    rng = random.Random(0)
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(1100))  # > 1024 clauses
    write_id_text(tmp_path / "queries.tsv", [("1", "quick fox"), ("long", words)])
    with pytest.raises(Exception, match="maxClauseCount") as caught:
        bm25_search(root / "index", tmp_path / "queries.tsv", tmp_path / "run.trec", latency_queries=0)
    assert "while searching query long" in caught.value.__notes__
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queries.tsv"]


@pytest.mark.parametrize("text, message", [
    ("1\tfox\n2\tdog\n1\tlazy\n", "line 3: expected a unique qid; 1 appeared before"),
    ("1\tfox\n2\t \n", "line 2: expected non-empty text for qid 2"),
    ("1\tfox\nq 2\tdog\n", "line 2: expected a qid without whitespace"),
])
def test_bad_queries_stop_before_searching(tiny_index, tmp_path, text, message):
    root, _ = tiny_index
    (tmp_path / "queries.tsv").write_text(text)
    with pytest.raises(InputFormatError, match=message):
        bm25_search(root / "index", tmp_path / "queries.tsv", tmp_path / "run.trec", latency_queries=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queries.tsv"]


def test_query_blocks_are_found_whole():
    run = b"1 Q0 a 1 2.000000 t\n1 Q0 b 2 1.000000 t\n10 Q0 c 1 3.000000 t\n2 Q0 d 1 1.000000 t\n"
    blocks = query_blocks(run)
    assert {qid: run[where] for qid, where in blocks.items()} == {
        "1": b"1 Q0 a 1 2.000000 t\n1 Q0 b 2 1.000000 t\n", "10": b"10 Q0 c 1 3.000000 t\n",
        "2": b"2 Q0 d 1 1.000000 t\n"}
    with pytest.raises(RuntimeError, match="query 1's lines are not together"):
        query_blocks(run + b"1 Q0 e 3 0.500000 t\n")


class ExactScores:
    """A stand-in for Anserini's SimpleSearcher: the floats behind a run's printed scores."""

    def __init__(self, scores):
        self.scores, self.searched = scores, []

    def search(self, text, k):
        self.searched.append(text)
        return [SimpleNamespace(docid=docid, score=score) for docid, score in self.scores[text].items()]


def test_scores_java_rounds_half_up_are_printed_as_write_run_does():
    """Java's %f rounds 15.6640625 up, Python's .6f to even; the next float up prints alike in both."""
    run = (b"q Q0 a 1 15.664063 t t\nq Q0 b 2 15.664063 t t\nq Q0 c 3 15.664013 t t\n"
           b"r Q0 d 1 0.039063 t t\nr Q0 e 2 0.039063 t t\nr Q0 f 3 0.023438 t t\n")
    above = float(np.nextafter(np.float32(15.6640625), np.float32(16)))  # 15.66406345
    exact = ExactScores({"text q": {"a": 15.6640625, "b": above, "c": 15.664013},
                         "text r": {"d": 0.0390625, "e": 0.0390625, "f": 0.0234375}})
    halfway = halfway_scores(run, "t t")
    assert [(qid, docid) for _, qid, docid in halfway] == [("q", "a"), ("q", "b"), ("r", "d"), ("r", "e")]
    fixed = round_half_even(run, halfway, exact, {"q": "text q", "r": "text r"}, hits=10)
    assert fixed == run.replace(b"a 1 15.664063", b"a 1 15.664062").replace(b"0.039063", b"0.039062")
    assert exact.searched == ["text q", "text r"]  # each query once
    assert [f"{score:.6f}" for score in (15.6640625, 0.0390625, 0.0234375)] == ["15.664062", "0.039062", "0.023438"]


def test_k1_b_change_scores(tiny_index, tmp_path):
    root, _ = tiny_index
    queries = tmp_path / "queries.tsv"
    write_id_text(queries, [("1", "lazy dog")])
    bm25_search(root / "index", queries, tmp_path / "a.trec", k1=0.9, b=0.4, latency_queries=0)
    bm25_search(root / "index", queries, tmp_path / "b.trec", k1=0.82, b=0.68, latency_queries=0)
    assert read_run(tmp_path / "a.trec") != read_run(tmp_path / "b.trec")


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    """SciFact's test split prepared and indexed (title + text), from ../shared/data."""
    from pipeline.data.beir import beir_source
    from pipeline.data.prepare import prepare_data

    root = tmp_path_factory.mktemp("scifact")
    source = beir_source("scifact", shared_data("scifact"), root / "downloads", ["test"])
    prepare_data(source, root / "scifact", ["test"])
    build_bm25_index(root / "scifact" / "collection.tsv", root / "index", threads=2)
    return root


@pytest.mark.realdata
def test_scifact_reproduces_pyserini_beir_flat(scifact, tmp_path):
    """Anserini BM25 (k1 0.9, b 0.4, title + text) on SciFact test: pyserini's published BEIR figures."""
    bm25_search(scifact / "index", scifact / "scifact" / "queries.test.tsv", tmp_path / "run.trec",
                hits=1000, threads=2, remove_query=True, latency_queries=50)
    means = score_run(read_run(tmp_path / "run.trec"), read_qrels(scifact / "scifact" / "qrels.test.txt"),
                      ["nDCG@10", "R@100", "R@1000"])["all"]
    assert means["nDCG@10"] == pytest.approx(0.6789, abs=0.001)
    assert means["R@100"] == pytest.approx(0.9253, abs=0.001)
    assert means["R@1000"] == pytest.approx(0.9767, abs=0.001)


@pytest.mark.realdata
def test_a_long_tie_on_scifact_is_printed_as_write_run_does(scifact, tmp_path):
    """A term 33 times: ties of some 100 hits, one of which Anserini adjusts to 15.6640625 (rank 960)."""
    from pipeline.sparse.search import search_collection

    write_id_text(tmp_path / "queries.tsv", [("r298", " ".join(["from"] * 33))])
    settings = {"k1": 0.9, "b": 0.4, "hits": 1000, "remove_query": False, "tag": "bm25"}
    search_collection(lucene_dir(scifact / "index"), tmp_path / "queries.tsv", tmp_path / "anserini.trec", threads=2,
                      **settings)
    bm25_search(scifact / "index", tmp_path / "queries.tsv", tmp_path / "run.trec", threads=2, latency_queries=0,
                **settings)
    pyserini_run(scifact / "index", tmp_path / "queries.tsv", tmp_path / "reference.trec", **settings)
    anserini = (tmp_path / "anserini.trec").read_bytes()
    assert halfway_scores(anserini, "bm25") and anserini != (tmp_path / "reference.trec").read_bytes()
    assert (tmp_path / "run.trec").read_bytes() == (tmp_path / "reference.trec").read_bytes()


def test_write_qrels_is_trec_format(tmp_path):
    write_qrels(tmp_path / "q.txt", {"1": {"a": 2}})
    assert (tmp_path / "q.txt").read_text() == "1 0 a 2\n"
