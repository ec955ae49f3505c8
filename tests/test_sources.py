"""The msmarco-passage and beir sources: official layouts served from 127.0.0.1, and real files."""

import gzip
import hashlib
import io
import json
import tarfile
import zipfile

import pytest

from pipeline.data.beir import beir_source
from pipeline.data.msmarco import msmarco_passage_source
from pipeline.data.prepare import prepare_data
from pipeline.formats import InputFormatError, read_qrels, read_queries, read_triples
from tests.conftest import shared_data
from tests.http_fixture import serve

COLLECTION = "0\tThe Manhattan Project produced the atomic bomb.\n1\tParis is the capital of France.\n" \
             "2\tThe Eiffel Tower is in Paris.\n3\tBananas are yellow.\n"


def tar_gz(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TRAIN_QUERIES = "10\twhat was the manhattan project\n11\tcapital of france\n12\tno judgement\n"


def msmarco_site(folder, triples: str, collection: str = COLLECTION,
                 train_queries: str = TRAIN_QUERIES) -> dict[str, str]:
    """Write fixture files in the official names and layout; return their MD5s."""
    files = {
        "collectionandqueries.tar.gz": tar_gz({
            "collection.tsv": collection, "queries.train.tsv": train_queries,
            "qrels.train.tsv": "10\t0\t0\t1\n11\t0\t1\t1\n",
            "queries.dev.small.tsv": "20\twhere is the eiffel tower\n", "qrels.dev.small.tsv": "20\t0\t2\t1\n"}),
        "triples.train.small.tar.gz": tar_gz({"triples.train.small.tsv": triples}),
        "msmarco-test2019-queries.tsv.gz": gzip.compress(b"30\tyellow fruit\n31\tunjudged topic\n"),
        "2019qrels-pass.txt": b"30 Q0 3 3\n30 Q0 0 0\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in files}


def test_msmarco_passage_from_a_local_server(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    triples = ("what was the manhattan project\tThe Manhattan Project produced the atomic bomb.\tBananas are yellow.\n"
               "capital of france\tParis is the capital of France.\tThe Eiffel Tower is in Paris.\n")
    md5 = msmarco_site(site, triples)
    with serve(site) as (url, _):
        source = msmarco_passage_source(tmp_path / "downloads", url, url + "2019qrels-pass.txt", md5)
        manifest = prepare_data(source, tmp_path / "out", ["train", "dev", "dl19"])
    out = tmp_path / "out"
    assert manifest["collection"] == 4 and manifest["triples"] == 2
    assert read_triples(out / "triples.train.tsv") == [("10", "0", "3"), ("11", "1", "2")]
    assert read_queries(out / "queries.train.tsv") == {"10": "what was the manhattan project",
                                                       "11": "capital of france"}
    assert read_qrels(out / "qrels.dl19.txt") == {"30": {"3": 3, "0": 0}}
    assert manifest["splits"]["dl19"]["dropped_unjudged"] == 1


def test_unknown_passage_text_in_triples_names_the_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    triples = ("capital of france\tParis is the capital of France.\tBananas are yellow.\n"
               "capital of france\tParis is the capital of France.\tA passage nobody has.\n")
    md5 = msmarco_site(site, triples)
    with serve(site) as (url, _):
        source = msmarco_passage_source(tmp_path / "downloads", url, url + "2019qrels-pass.txt", md5)
        with pytest.raises(InputFormatError, match=r"triples.train.small.tsv, line 2: expected passage texts"):
            prepare_data(source, tmp_path / "out", ["train"])
    assert not (tmp_path / "out" / "collection.tsv").exists()


def test_msmarco_passage_empty_texts(tmp_path):
    """An empty passage (4) and an empty train query (13): refused by default, else dropped with the triples
    that name them (the triples file names them by their empty text)."""
    site = tmp_path / "site"
    site.mkdir()
    triples = ("capital of france\tParis is the capital of France.\tBananas are yellow.\n"
               "capital of france\tParis is the capital of France.\t\n"
               "\tParis is the capital of France.\tBananas are yellow.\n")
    md5 = msmarco_site(site, triples, collection=COLLECTION + "4\t \n", train_queries=TRAIN_QUERIES + "13\t\n")
    with serve(site) as (url, _):
        with pytest.raises(InputFormatError, match=r"queries.train.tsv, line 4: expected non-empty text for qid 13"):
            msmarco_passage_source(tmp_path / "downloads", url, url + "2019qrels-pass.txt", md5)
        source = msmarco_passage_source(tmp_path / "downloads", url, url + "2019qrels-pass.txt", md5,
                                        empty_text="drop")
        manifest = prepare_data(source, tmp_path / "out", ["train", "dl19"], empty_text="drop")
    assert read_triples(tmp_path / "out" / "triples.train.tsv") == [("11", "1", "3")]
    assert (manifest["triples"], manifest["dropped_triples_naming_empty"]) == (1, 2)
    assert (manifest["collection"], manifest["dropped_empty_passages"]) == (4, 1)
    train = manifest["splits"]["train"]
    assert (train["queries"], train["dropped_empty_queries"], train["dropped_unjudged"]) == (2, 1, 1)


def test_real_dev_small_files_parse():
    queries = read_queries(shared_data("msmarco-samples", "queries.dev.small.tsv"))
    qrels = read_qrels(shared_data("msmarco-samples", "qrels.dev.small.tsv"))
    assert len(queries) == 6980 and sum(len(j) for j in qrels.values()) == 7437 and set(qrels) == set(queries)


def test_real_scifact():
    source = beir_source("scifact", shared_data("scifact"), shared_data().parent / "unused", ["train", "test"])
    passages = dict(source.collection())
    assert len(passages) == 5183
    test = source.splits["test"]
    assert len(test.queries) == 300 and sum(len(j) for j in test.qrels.values()) == 339
    assert len(source.splits["train"].queries) == 809
    first = json.loads(shared_data("scifact", "corpus.jsonl").read_text().splitlines()[0])
    assert passages[first["_id"]] == " ".join(f"{first['title']} {first['text']}".split())


def beir_dir(root, corpus: str, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n",
             queries: str = '{"_id": "q1", "text": "a question"}\n'):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus)
    (root / "queries.jsonl").write_text(queries)
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


@pytest.mark.parametrize(("corpus", "qrels", "message"), [
    ('{"_id": "d1", "title": "", "text": "x"}\n{"_id": "d2", "text": \n', None,
     r"corpus.jsonl, line 2: expected one JSON"),
    ('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n', None, "line 2: expected a unique _id"),
    ('{"_id": "d1", "title": "t"}\n', None, r"line 1: expected the field\(s\) text"),
    ('{"_id": "d1", "text": "x"}\n', "query-id\tcorpus-id\tscore\nq1\td1\thigh\n",
     r"test.tsv, line 2: expected an integer"),
])
def test_bad_beir_lines_name_file_and_line(tmp_path, corpus, qrels, message):
    root = beir_dir(tmp_path / "beir", corpus, qrels or "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(InputFormatError, match=message):
        prepare_data(beir_source("toy", root, tmp_path / "dl", ["test"]), tmp_path / "out", ["test"])


def test_beir_zip_download_from_a_local_server(tmp_path):
    root = beir_dir(tmp_path / "toy", '{"_id": "d1", "title": "Title", "text": "body text"}\n')
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "toy.zip", "w") as bundle:
        for path in root.rglob("*"):
            if path.is_file():
                bundle.write(path, f"toy/{path.relative_to(root)}")
    with serve(site) as (url, _):
        source = beir_source("toy", url, tmp_path / "downloads", ["test"])
    assert dict(source.collection()) == {"d1": "Title body text"}
    with pytest.raises(FileNotFoundError, match="no qrels for split 'dev'"):
        beir_source("toy", tmp_path / "downloads" / "toy", tmp_path / "x", ["dev"])


BEIR_EMPTY = '{"_id": "d1", "text": "x"}\n{"_id": "d2", "title": "", "text": " "}\n{"_id": "d3", "text": "y"}\n'


def test_beir_empty_passage_refused_or_dropped(tmp_path):
    root = beir_dir(tmp_path / "beir", BEIR_EMPTY, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\n")
    with pytest.raises(InputFormatError, match=r"corpus.jsonl, line 2: expected non-empty title or text for d2 "
                                               r"\(or set dataset.empty_text to drop"):
        prepare_data(beir_source("toy", root, tmp_path / "dl", ["test"]), tmp_path / "out", ["test"])
    source = beir_source("toy", root, tmp_path / "dl", ["test"], empty_text="drop")
    with pytest.raises(InputFormatError, match=r"test.tsv, line 3: expected .*pid d2 was dropped for its empty text"):
        prepare_data(source, tmp_path / "out", ["test"], empty_text="drop")
    manifest = prepare_data(source, tmp_path / "out", ["test"], unknown_judged="drop", empty_text="drop")
    assert (manifest["collection"], manifest["dropped_empty_passages"]) == (2, 1)
    assert read_qrels(tmp_path / "out" / "qrels.test.txt") == {"q1": {"d1": 1}}
    assert manifest["splits"]["test"]["judged_outside"] == 1


def test_beir_empty_query_dropped_with_its_judgements(tmp_path):
    queries = '{"_id": "q1", "text": "a question"}\n{"_id": "q2", "text": ""}\n'
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t1\nq2\td3\t-1\n"
    root = beir_dir(tmp_path / "beir", '{"_id": "d1", "text": "x"}\n{"_id": "d3", "text": "y"}\n', qrels, queries)
    with pytest.raises(InputFormatError, match=r"queries.jsonl, line 2: expected non-empty text for query q2"):
        beir_source("toy", root, tmp_path / "dl", ["test"])
    source = beir_source("toy", root, tmp_path / "dl", ["test"], empty_text="drop")
    manifest = prepare_data(source, tmp_path / "out", ["test"], empty_text="drop")
    assert read_queries(tmp_path / "out" / "queries.test.tsv") == {"q1": "a question"}
    assert read_qrels(tmp_path / "out" / "qrels.test.txt") == {"q1": {"d1": 1}}
    test = manifest["splits"]["test"]
    assert (test["dropped_empty_queries"], test["dropped_empty_query_judgements"], test["negative_judgements"]) == \
        (1, 2, 0)
