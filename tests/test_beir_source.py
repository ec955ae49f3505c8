"""beir source: strict qrels and ids, split queries from qrels, the zip download path (checksum, partial
extraction, reuse offline), and real SciFact served as a BEIR zip from 127.0.0.1."""

import hashlib
import json
import zipfile

import pytest

from pipeline.data import beir
from pipeline.data.beir import beir_source
from pipeline.download import ChecksumError
from pipeline.formats import InputFormatError
from tests.conftest import shared_data
from tests.http_fixture import serve

CLOSED = "http://127.0.0.1:9/"  # nothing listens there: any network access fails
CORPUS = ('{"_id": "d1", "title": "", "text": "plain  text"}\n'
          '{"_id": "d2", "title": "A title", "text": "body"}\n')
QUERIES = '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n{"_id": "q3", "text": "third"}\n'
HEADER = "query-id\tcorpus-id\tscore\n"


def beir_dir(root, corpus: str = CORPUS, queries: str = QUERIES, **qrels: str):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus)
    (root / "queries.jsonl").write_text(queries)
    for split, text in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(text)
    return root


def zip_dir(root, archive, prefix: str) -> str:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                bundle.write(path, f"{prefix}/{path.relative_to(root)}")
    return hashlib.md5(archive.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    with serve(folder) as (url, _):
        yield folder, url


def test_split_queries_come_from_qrels_and_rel_zero_rows_stay(tmp_path):
    root = beir_dir(tmp_path, test=HEADER + "q1\td1\t1\nq1\td2\t0\n", train=HEADER + "q2\td1\t2\n")
    source = beir_source("toy", root, tmp_path / "dl", ["test", "train"])
    assert source.splits["test"].queries == {"q1": "first"}
    assert source.splits["test"].qrels == {"q1": {"d1": 1, "d2": 0}}
    assert source.splits["train"].queries == {"q2": "second"}
    assert dict(source.collection()) == {"d1": "plain text", "d2": "A title body"}


@pytest.mark.parametrize(("qrels", "message"), [
    (HEADER + "q1\td1\t1\nq9\td1\t1\n", r"test\.tsv, line 3: expected query ids from .*queries\.jsonl; q9"),
    (HEADER + "q1\td1\t1\nq1\td1\t2\n", r"test\.tsv, line 3: expected one score per \(query, doc\)"),
    (HEADER + "q1\td1\n", r"test\.tsv, line 2: expected 'query-id<TAB>corpus-id<TAB>score'"),
    (HEADER + "q1\t\t1\n", r"test\.tsv, line 2: expected 'query-id<TAB>corpus-id<TAB>score'"),
    ("q1 d1 1\n", r"test\.tsv, line 1: expected 'query-id<TAB>corpus-id<TAB>score'"),
])
def test_bad_qrels_name_file_and_line(tmp_path, qrels, message):
    root = beir_dir(tmp_path, test=qrels)
    with pytest.raises(InputFormatError, match=message):
        beir_source("toy", root, tmp_path / "dl", ["test"])


def test_bad_ids_and_queries_name_file_and_line(tmp_path):
    spaced = CORPUS + '{"_id": "d 3", "text": "x"}\n'
    root = beir_dir(tmp_path / "a", corpus=spaced, test=HEADER + "q1\td1\t1\n")
    with pytest.raises(InputFormatError, match=r"corpus\.jsonl, line 3: expected an _id without whitespace"):
        list(beir_source("toy", root, tmp_path / "dl", ["test"]).collection())
    root = beir_dir(tmp_path / "b", queries=QUERIES + '{"_id": "q4", "text": "  "}\n', test=HEADER)
    with pytest.raises(InputFormatError, match=r"queries\.jsonl, line 4: expected non-empty text for query"):
        beir_source("toy", root, tmp_path / "dl", ["test"])
    with pytest.raises(ValueError, match=r"BEIR dataset name '\.\./up'"):
        beir_source("../up", CLOSED, tmp_path / "dl", ["test"])


def test_zip_is_verified_extracted_as_needed_and_reused_offline(site, tmp_path, monkeypatch):
    folder, url = site
    root = beir_dir(tmp_path / "src", test=HEADER + "q1\td2\t1\n", train=HEADER + "q3\td1\t1\n")
    monkeypatch.setitem(beir.MD5, "toy", zip_dir(root, folder / "toy.zip", "toy"))
    downloads = tmp_path / "downloads"
    source = beir_source("toy", url, downloads, ["test"])
    assert source.splits["test"].qrels == {"q1": {"d2": 1}}
    assert not (downloads / "toy" / "qrels" / "train.tsv").exists()
    # Offline now: the cached zip (checksum still verified) provides the split not extracted yet.
    source = beir_source("toy", CLOSED, downloads, ["test", "train"])
    assert source.splits["train"].queries == {"q3": "third"}
    assert dict(source.collection()) == {"d1": "plain text", "d2": "A title body"}

    monkeypatch.setitem(beir.MD5, "toy2", "0" * 32)
    zip_dir(root, folder / "toy2.zip", "toy2")
    with pytest.raises(ChecksumError, match=r"toy2\.zip: md5 mismatch"):
        beir_source("toy2", url, downloads, ["test"])
    assert not (downloads / "toy2").exists() and not (downloads / "toy2.zip").exists()


def test_real_scifact_from_a_zip_matches_the_directory(site, tmp_path, monkeypatch):
    folder, url = site
    local = shared_data("scifact")
    # The served zip is rebuilt here, so it cannot carry the official checksum.
    monkeypatch.setitem(beir.MD5, "scifact", zip_dir(local, folder / "scifact.zip", "scifact"))
    fetched = beir_source("scifact", url, tmp_path, ["train", "test"])
    direct = beir_source("scifact", local, tmp_path / "unused", ["train", "test"])
    passages = dict(fetched.collection())
    assert len(passages) == 5183 and passages == dict(direct.collection())
    test, train = fetched.splits["test"], fetched.splits["train"]
    assert len(test.queries) == 300 and sum(len(judged) for judged in test.qrels.values()) == 339
    assert len(train.queries) == 809 and sum(len(judged) for judged in train.qrels.values()) == 919
    assert test.qrels == direct.splits["test"].qrels
    doc = next(json.loads(line) for line in (local / "corpus.jsonl").open() if '"_id": "4983"' in line)
    assert passages["4983"] == " ".join(f"{doc['title']} {doc['text']}".split())
    assert passages["4983"].startswith("Microstructural development of human newborn cerebral white matter "
                                       "assessed in vivo by diffusion tensor magnetic resonance imaging. "
                                       "Alterations of the architecture of cerebral white matter")
