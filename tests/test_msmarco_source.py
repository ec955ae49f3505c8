"""msmarco-passage source: files extracted once, triples streamed lazily from their archive, checksums,
and the real dev.small, DL19 qrels and text triples (served from 127.0.0.1 in the official layout)."""

import gzip
import hashlib
import io
import tarfile

import pytest

from pipeline.data.msmarco import MD5, msmarco_passage_source
from pipeline.download import ChecksumError
from pipeline.formats import InputFormatError
from tests.conftest import shared_data
from tests.http_fixture import serve

CLOSED = "http://127.0.0.1:9/"  # nothing listens there: any network access fails
PASSAGES = {"0": "The Manhattan Project produced the atomic bomb.", "1": "Paris is the capital of France.",
            "2": "The Eiffel Tower is in Paris.", "3": "Bananas are yellow."}
TRAIN = {"10": "what was the manhattan project", "11": "capital of france"}
# The second positive has a doubled space: texts are matched with their whitespace folded.
TRIPLES = ("what was the manhattan project\tThe Manhattan Project produced the atomic bomb.\t"
           "Bananas are yellow.\n"
           "capital of france\tParis  is the capital of France.\tThe Eiffel Tower is in Paris.\n")


def tsv(rows: dict[str, str]) -> bytes:
    return "".join(f"{key}\t{value}\n" for key, value in rows.items()).encode()


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One loopback server for the module; each test publishes under its own folder."""
    folder = tmp_path_factory.mktemp("site")
    with serve(folder) as (url, _):
        yield folder, url


def publish(site, name: str, *, passages=PASSAGES, train=TRAIN, triples: str = TRIPLES,
            dev_queries: bytes = b"20\twhere is the eiffel tower\n", dev_qrels: bytes = b"20\t0\t2\t1\n",
            dl19_qrels: bytes = b"30 Q0 3 3\n30 Q0 0 0\n") -> tuple[str, dict[str, str]]:
    """Write the four official files under `name`; return their base URL and MD5s."""
    folder, url = site
    (folder / name).mkdir()
    files = {
        "collectionandqueries.tar.gz": tar_gz({
            "collection.tsv": tsv(passages), "queries.train.tsv": tsv(train),
            "qrels.train.tsv": "".join(f"{qid}\t0\t0\t1\n" for qid in train).encode(),
            "queries.dev.small.tsv": dev_queries, "qrels.dev.small.tsv": dev_qrels}),
        "triples.train.small.tar.gz": tar_gz({"triples.train.small.tsv": triples.encode()}),
        "msmarco-test2019-queries.tsv.gz": gzip.compress(b"30\tyellow fruit\n31\tunjudged topic\n"),
        "2019qrels-pass.txt": dl19_qrels,
    }
    for file, data in files.items():
        (folder / name / file).write_bytes(data)
    return f"{url}{name}/", {file: hashlib.md5(data).hexdigest() for file, data in files.items()}


def test_files_are_extracted_once_and_triples_stream_from_the_archive(site, tmp_path):
    base, md5 = publish(site, "lazy")
    source = msmarco_passage_source(tmp_path, base, base + "2019qrels-pass.txt", md5)
    root = tmp_path / "msmarco-passage"
    assert not (root / "triples.train.small.tar.gz").exists()  # fetched only when triples are asked for
    assert source.splits["dev"].queries == {"20": "where is the eiffel tower"}
    assert source.splits["dl19"].qrels == {"30": {"3": 3, "0": 0}}
    assert list(source.triples()) == [("10", "0", "3"), ("11", "1", "2")]
    assert (root / "triples.train.small.tar.gz").is_file() and not (root / "triples.train.small.tsv").exists()

    again = msmarco_passage_source(tmp_path, CLOSED, CLOSED + "2019qrels-pass.txt", md5)
    assert list(again.triples()) == [("10", "0", "3"), ("11", "1", "2")]
    assert dict(again.collection()) == PASSAGES


def test_checksum_mismatch_stops_before_extraction(site, tmp_path):
    base, md5 = publish(site, "corrupt")
    wrong = {**md5, "collectionandqueries.tar.gz": "0" * 32}
    with pytest.raises(ChecksumError, match=r"collectionandqueries\.tar\.gz: md5 mismatch, expected 0{32}"):
        msmarco_passage_source(tmp_path, base, base + "2019qrels-pass.txt", wrong)
    assert not (tmp_path / "msmarco-passage" / "collection.tsv").exists()


def test_triples_errors_name_the_member_or_the_extracted_file(site, tmp_path):
    unknown_query = "who asked this\tBananas are yellow.\tBananas are yellow.\n"
    base, md5 = publish(site, "unknown", triples=TRIPLES + unknown_query)
    source = msmarco_passage_source(tmp_path / "a", base, base + "2019qrels-pass.txt", md5)
    pattern = r"triples\.train\.small\.tar\.gz:triples\.train\.small\.tsv, line 3: expected a query text"
    with pytest.raises(InputFormatError, match=pattern):
        list(source.triples())

    extracted = tmp_path / "b" / "msmarco-passage" / "triples.train.small.tsv"
    extracted.parent.mkdir(parents=True)
    extracted.write_text("capital of france\tParis is the capital of France.\n")
    source = msmarco_passage_source(tmp_path / "b", base, base + "2019qrels-pass.txt", md5)
    pattern = r"msmarco-passage/triples\.train\.small\.tsv, line 1: expected 'query"
    with pytest.raises(InputFormatError, match=pattern):
        list(source.triples())
    assert not (tmp_path / "b" / "msmarco-passage" / "triples.train.small.tar.gz").exists()


def test_real_dev_small_and_dl19_qrels_through_the_source(site, tmp_path):
    dev_queries = shared_data("msmarco-samples", "queries.dev.small.tsv").read_bytes()
    dev_qrels = shared_data("msmarco-samples", "qrels.dev.small.tsv").read_bytes()
    dl19_qrels = shared_data("msmarco-dl-mini", "qrels.dl19-passage.txt").read_bytes()
    base, md5 = publish(site, "real", dev_queries=dev_queries, dev_qrels=dev_qrels, dl19_qrels=dl19_qrels)
    # NIST's file must pass the official checksum recorded in the module, not the fixture's.
    source = msmarco_passage_source(tmp_path, base, base + "2019qrels-pass.txt",
                                    {**md5, "2019qrels-pass.txt": MD5["2019qrels-pass.txt"]})
    dev = source.splits["dev"]
    assert len(dev.queries) == 6980 and sum(len(judged) for judged in dev.qrels.values()) == 7437
    assert hashlib.md5(dev_qrels).hexdigest() == "38a80559a561707ac2ec0f150ecd1e8a"  # the official file
    assert len(source.splits["dl19"].qrels) == 43


def test_real_text_triples_map_back_to_ids(site, tmp_path):
    sample = shared_data("msmarco-samples", "triples.train.small.sample.tsv")
    lines = sample.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines]
    texts = list(dict.fromkeys(text for row in rows for text in row[1:]))
    passages = {str(pid): text for pid, text in enumerate(texts)}
    train = {str(1000 + i): query for i, query in enumerate(dict.fromkeys(row[0] for row in rows))}
    base, md5 = publish(site, "sample", passages=passages, train=train, triples="\n".join(lines) + "\n")
    source = msmarco_passage_source(tmp_path, base, base + "2019qrels-pass.txt", md5)
    mapped = list(source.triples())
    assert len(mapped) == 100
    assert [(train[q], passages[p], passages[n]) for q, p, n in mapped] == [tuple(row) for row in rows]
