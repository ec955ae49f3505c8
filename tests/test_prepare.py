import json
from pathlib import Path

import pytest

from pipeline.data import Source, Split
from pipeline.data.local import msmarco_local_source
from pipeline.data.prepare import prepare_data
from pipeline.formats import InputFormatError, read_collection, read_qrels, read_queries, read_triples
from tests.conftest import shared_data

COLLECTION = "a\tfirst passage\nb\tsecond passage\nc\tthird passage\n"
QUERIES = "1\tfirst?\n2\tsecond?\n3\tunjudged?\n"


def local_dataset(root: Path, qrels: str = "1 0 a 1\n2 0 b 2\n", triples: str | None = None,
                  collection: str = COLLECTION, queries: str = QUERIES, train_queries: str = "1\tfirst?\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "collection.tsv").write_text(collection)
    (root / "queries.dev.tsv").write_text(queries)
    (root / "qrels.dev.txt").write_text(qrels)
    if triples is not None:
        (root / "queries.train.tsv").write_text(train_queries)
        (root / "qrels.train.txt").write_text("1 0 a 1\n")
        (root / "triples.train.tsv").write_text(triples)
    return root


def test_local_dataset_is_normalised_and_unjudged_queries_dropped(tmp_path):
    source = msmarco_local_source(local_dataset(tmp_path / "in"), ["dev"])
    manifest = prepare_data(source, tmp_path / "out", ["dev"])
    out = tmp_path / "out"
    assert read_queries(out / "queries.dev.tsv") == {"1": "first?", "2": "second?"}
    assert read_qrels(out / "qrels.dev.txt") == {"1": {"a": 1}, "2": {"b": 2}}
    assert manifest["splits"]["dev"] == {"queries": 2, "dropped_unjudged": 1, "dropped_empty_queries": 0,
                                         "judgements": 2, "judged_outside": 0, "dropped_empty_query_judgements": 0,
                                         "negative_judgements": 0}
    assert manifest["dropped_empty_passages"] == 0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in out.iterdir()) == ["collection.tsv", "manifest.json", "qrels.dev.txt",
                                                     "queries.dev.tsv"]


def test_unknown_pid_in_qrels_names_file_and_line_and_writes_nothing(tmp_path):
    source = msmarco_local_source(local_dataset(tmp_path / "in", qrels="1 0 a 1\n2 0 zz 1\n"), ["dev"])
    with pytest.raises(InputFormatError) as err:
        prepare_data(source, tmp_path / "out", ["dev"])
    assert err.value.path.endswith("qrels.dev.txt") and err.value.line == 2 and "zz" in str(err.value)
    assert list((tmp_path / "out").iterdir()) == []


def test_qrels_for_unknown_query_is_an_error(tmp_path):
    source = msmarco_local_source(local_dataset(tmp_path / "in", qrels="1 0 a 1\n9 0 b 1\n"), ["dev"])
    with pytest.raises(InputFormatError, match="qid 9 has no query text") as err:
        prepare_data(source, tmp_path / "out", ["dev"])
    assert err.value.line == 2


def test_missing_split_and_misnamed_files(tmp_path):
    root = local_dataset(tmp_path / "in")
    with pytest.raises(FileNotFoundError, match="no queries file for split 'test'"):
        msmarco_local_source(root, ["test"])
    (root / "qrels.dev.txt").rename(root / "judgements.txt")
    source = msmarco_local_source(root, ["dev"], {"dev": {"queries": "queries.dev.tsv", "qrels": "judgements.txt"}})
    assert prepare_data(source, tmp_path / "out", ["dev"])["splits"]["dev"]["queries"] == 2
    with pytest.raises(ValueError, match=r"split\(s\) \['train'\] not in this dataset"):
        prepare_data(source, tmp_path / "out2", ["train"])


def test_local_triples_are_checked_against_the_collection(tmp_path):
    root = local_dataset(tmp_path / "in", triples="1\ta\tb\n1\ta\tnope\n")
    source = msmarco_local_source(root, ["train", "dev"])
    with pytest.raises(InputFormatError, match="line 2: expected pids from the collection"):
        prepare_data(source, tmp_path / "out", ["train", "dev"])
    (root / "triples.train.tsv").write_text("1\ta\tb\n1\ta\tc\n")
    prepare_data(msmarco_local_source(root, ["train", "dev"]), tmp_path / "out", ["train", "dev"])
    assert read_triples(tmp_path / "out" / "triples.train.tsv") == [("1", "a", "b"), ("1", "a", "c")]


def test_duplicate_and_empty_passages_from_a_generated_source(tmp_path):
    split = Split({"1": "q"}, {"1": {"a": 1}}, origin="memory")
    twice = Source(collection=lambda: [("a", "x"), ("a", "y")], collection_origin="gen", splits={"dev": split})
    with pytest.raises(InputFormatError, match="unique pids; a appears twice"):
        prepare_data(twice, tmp_path / "out", ["dev"])
    empty = Source(collection=lambda: [("a", " ")], collection_origin="gen", splits={"dev": split})
    with pytest.raises(InputFormatError, match="non-empty text"):
        prepare_data(empty, tmp_path / "out", ["dev"])
    assert list((tmp_path / "out").iterdir()) == []


def test_real_dl_mini_directory(tmp_path):
    root = shared_data("msmarco-dl-mini")
    files = {"dl19": {"queries": "topics.dl19-passage.txt", "qrels": "qrels.dl19-passage.txt"},
             "dl20": {"queries": "topics.dl20.txt", "qrels": "qrels.dl20-passage.txt"}}
    source = msmarco_local_source(root, ["dl19", "dl20"], files)
    with pytest.raises(InputFormatError, match=r"qrels.dl19-passage.txt, line .*unknown_judged"):
        prepare_data(source, tmp_path / "strict", ["dl19", "dl20"])
    manifest = prepare_data(source, tmp_path / "out", ["dl19", "dl20"], unknown_judged="keep")
    assert manifest["collection"] == 30091
    dl19 = manifest["splits"]["dl19"]
    # The topic file already holds only the 43 judged queries.
    assert (dl19["queries"], dl19["dropped_unjudged"], dl19["judgements"]) == (43, 0, 9260)
    assert dl19["judgements"] - dl19["judged_outside"] == 5698  # the judged passages the sample carries
    dropped = prepare_data(source, tmp_path / "dropped", ["dl19"], unknown_judged="drop")["splits"]["dl19"]
    assert dropped["judgements"] == 5698


EMPTY_B = "a\tfirst passage\nb\t  \nc\tthird passage\n"  # passage b has only whitespace


def test_empty_passage_is_an_error_naming_file_and_line(tmp_path):
    source = msmarco_local_source(local_dataset(tmp_path / "in", collection=EMPTY_B), ["dev"])
    with pytest.raises(InputFormatError, match=r"expected non-empty text for pid b .*dataset\.empty_text") as err:
        prepare_data(source, tmp_path / "out", ["dev"])
    assert err.value.path.endswith("collection.tsv") and err.value.line == 2
    assert list((tmp_path / "out").iterdir()) == []


def test_dropped_empty_passage_judged_is_an_error_naming_the_reason(tmp_path):
    source = msmarco_local_source(local_dataset(tmp_path / "in", collection=EMPTY_B), ["dev"], empty_text="drop")
    with pytest.raises(InputFormatError, match=r"pid b was dropped for its empty text .*unknown_judged") as err:
        prepare_data(source, tmp_path / "out", ["dev"], empty_text="drop")
    assert err.value.path.endswith("qrels.dev.txt") and err.value.line == 2
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(("unknown_judged", "qrels", "unjudged"), [
    ("keep", {"1": {"a": 1}, "2": {"b": 2}}, 1),
    ("drop", {"1": {"a": 1}}, 2),  # query 2 loses its only judgement, so it goes too
])
def test_dropped_empty_passage_judgements_follow_unknown_judged(tmp_path, unknown_judged, qrels, unjudged):
    source = msmarco_local_source(local_dataset(tmp_path / "in", collection=EMPTY_B), ["dev"], empty_text="drop")
    manifest = prepare_data(source, tmp_path / "out", ["dev"], unknown_judged=unknown_judged, empty_text="drop")
    assert dict(read_collection(tmp_path / "out" / "collection.tsv")) == {"a": "first passage", "c": "third passage"}
    assert (manifest["collection"], manifest["dropped_empty_passages"]) == (2, 1)
    assert read_qrels(tmp_path / "out" / "qrels.dev.txt") == qrels
    dev = manifest["splits"]["dev"]
    assert (dev["judged_outside"], dev["dropped_unjudged"], dev["queries"]) == (1, unjudged, len(qrels))


def test_empty_query_is_an_error_naming_file_and_line(tmp_path):
    root = local_dataset(tmp_path / "in", queries="1\tfirst?\n2\t\n3\tunjudged?\n")
    with pytest.raises(InputFormatError, match=r"expected non-empty text for qid 2 .*dataset\.empty_text") as err:
        msmarco_local_source(root, ["dev"])
    assert err.value.path.endswith("queries.dev.tsv") and err.value.line == 2


def test_dropped_empty_query_takes_its_judgements(tmp_path):
    root = local_dataset(tmp_path / "in", queries="1\tfirst?\n2\t \n3\tunjudged?\n",
                         qrels="1 0 a 1\n2 0 b 2\n2 0 c 0\n")
    manifest = prepare_data(msmarco_local_source(root, ["dev"], empty_text="drop"), tmp_path / "out", ["dev"],
                            empty_text="drop")
    assert read_queries(tmp_path / "out" / "queries.dev.tsv") == {"1": "first?"}
    assert read_qrels(tmp_path / "out" / "qrels.dev.txt") == {"1": {"a": 1}}
    dev = manifest["splits"]["dev"]
    assert (dev["queries"], dev["dropped_empty_queries"], dev["dropped_empty_query_judgements"]) == (1, 1, 2)
    assert (dev["dropped_unjudged"], dev["judgements"]) == (1, 1)


def test_empty_query_from_a_generated_source(tmp_path):
    split = Split({"1": "q", "2": " "}, {"1": {"a": 1}, "2": {"a": 1}}, origin="memory")
    source = Source(collection=lambda: [("a", "x")], collection_origin="gen", splits={"dev": split})
    with pytest.raises(InputFormatError, match="memory: expected non-empty text for qid 2"):
        prepare_data(source, tmp_path / "out", ["dev"])
    manifest = prepare_data(source, tmp_path / "out", ["dev"], empty_text="drop")
    assert manifest["splits"]["dev"]["dropped_empty_queries"] == 1
    assert read_queries(tmp_path / "out" / "queries.dev.tsv") == {"1": "q"}
    with pytest.raises(ValueError, match="empty_text must be one of"):
        prepare_data(source, tmp_path / "out", ["dev"], empty_text="keep")


def test_triples_naming_a_dropped_passage_or_query_are_dropped(tmp_path):
    root = local_dataset(tmp_path / "in", collection=EMPTY_B, triples="1\ta\tb\n1\ta\tc\n4\ta\tc\n",
                         train_queries="1\tfirst?\n4\t\n")
    source = msmarco_local_source(root, ["train", "dev"], empty_text="drop")
    manifest = prepare_data(source, tmp_path / "out", ["train", "dev"], unknown_judged="drop", empty_text="drop")
    assert read_triples(tmp_path / "out" / "triples.train.tsv") == [("1", "a", "c")]
    assert (manifest["triples"], manifest["dropped_triples_naming_empty"]) == (1, 2)
    assert manifest["splits"]["train"]["dropped_empty_queries"] == 1


def test_negative_judgements_are_counted_and_kept(tmp_path):
    qrels = "1 0 a 1\n1 0 c -1\n2 0 b 2\n2 0 a -1\n3 0 c -1\n3 0 b 0\n"
    manifest = prepare_data(msmarco_local_source(local_dataset(tmp_path / "in", qrels=qrels), ["dev"]),
                            tmp_path / "out", ["dev"])
    assert read_qrels(tmp_path / "out" / "qrels.dev.txt") == {"1": {"a": 1, "c": -1}, "2": {"b": 2, "a": -1},
                                                              "3": {"c": -1, "b": 0}}
    # A query judged only non-relevant stays: trec_eval -c averages it in with 0.
    dev = manifest["splits"]["dev"]
    assert (dev["negative_judgements"], dev["judgements"], dev["queries"]) == (3, 6, 3)
