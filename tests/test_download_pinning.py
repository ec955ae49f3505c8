"""Sources without a published md5 are pinned on first use: BEIR datasets missing from the md5 table, MS MARCO
files missing from the md5 mapping, and the Hugging Face doc2query predictions share one
`<download_dir>/checksums.tsv`, and a file in place that differs from its line is not used."""

import gzip
import hashlib
import zipfile

import pytest

from pipeline.data.beir import MD5 as BEIR_MD5
from pipeline.data.beir import beir_source
from pipeline.data.msmarco import msmarco_passage_source
from pipeline.doc2query.predictions import fetch_predictions
from pipeline.download import DownloadError
from tests.http_fixture import serve
from tests.test_msmarco_source import publish

CLOSED = "http://127.0.0.1:9/"  # nothing listens there: any network access fails


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    with serve(folder) as (url, _):
        yield folder, url


def pinned(lock) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in lock.read_text().splitlines()]
    assert rows[0] == ["name", "size", "sha256", "url"]
    return {row[0]: row[1:] for row in rows[1:]}


def beir_zip(path, qrels: str) -> bytes:
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("toy/corpus.jsonl", '{"_id": "d1", "text": "a passage"}\n')
        bundle.writestr("toy/queries.jsonl", '{"_id": "q1", "text": "a query"}\n')
        bundle.writestr("toy/qrels/test.tsv", qrels)
    return path.read_bytes()


def test_beir_dataset_missing_from_the_md5_table_is_pinned(site, tmp_path):
    folder, url = site
    assert "toy" not in BEIR_MD5
    data = beir_zip(folder / "toy.zip", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    downloads = tmp_path / "downloads"
    assert beir_source("toy", url, downloads, ["test"]).splits["test"].qrels == {"q1": {"d1": 1}}
    assert pinned(downloads / "checksums.tsv") == {
        "toy.zip": [str(len(data)), hashlib.sha256(data).hexdigest(), f"{url}toy.zip"]}
    # Another (valid) zip in place of the pinned one, extracted files gone: it is not used.
    beir_zip(downloads / "toy.zip", "query-id\tcorpus-id\tscore\nq1\td1\t0\n")
    for path in sorted((downloads / "toy").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(DownloadError, match="place it at"):
        beir_source("toy", CLOSED, downloads, ["test"])
    assert not (downloads / "toy.zip").exists()


def test_msmarco_file_without_md5_is_pinned_in_the_download_dir(site, tmp_path):
    base, md5 = publish(site, "pinning")
    del md5["2019qrels-pass.txt"]
    source = msmarco_passage_source(tmp_path, base, base + "2019qrels-pass.txt", md5)
    assert source.splits["dl19"].qrels == {"30": {"3": 3, "0": 0}}
    assert list(pinned(tmp_path / "checksums.tsv")) == ["msmarco-passage/2019qrels-pass.txt"]
    (tmp_path / "msmarco-passage" / "2019qrels-pass.txt").write_bytes(b"30 Q0 3 0\n30 Q0 0 3\n")
    with pytest.raises(DownloadError, match="place it at"):
        msmarco_passage_source(tmp_path, CLOSED, CLOSED + "2019qrels-pass.txt", md5)


def test_hugging_face_predictions_are_pinned_beside_the_datasets(site, tmp_path):
    folder, url = site
    data = gzip.compress(b'{"id": "0", "predicted_queries": ["q"]}\n')
    (folder / "d2q.jsonl.gz").write_bytes(data)
    downloads = tmp_path / "downloads"
    out = tmp_path / "predictions.jsonl"
    assert fetch_predictions([("d2q.jsonl.gz", None)], downloads / "doc2query", out, url, progress=False) == 1
    assert pinned(downloads / "checksums.tsv") == {
        "doc2query/d2q.jsonl.gz": [str(len(data)), hashlib.sha256(data).hexdigest(), f"{url}d2q.jsonl.gz"]}
    assert fetch_predictions([("d2q.jsonl.gz", None)], downloads / "doc2query", out, CLOSED, progress=False) == 1
    (downloads / "doc2query" / "d2q.jsonl.gz").write_bytes(gzip.compress(b'{"id": "9", "predicted_queries": []}\n'))
    with pytest.raises(DownloadError, match="place it at"):
        fetch_predictions([("d2q.jsonl.gz", None)], downloads / "doc2query", out, CLOSED, progress=False)
