"""`msmarco-passage`: the official MS MARCO passage files and TREC DL 2019, downloaded and verified.

Splits: `train` (queries.train + qrels.train), `dev` (dev.small: the 6,980 queries the paper
reports) and `dl19` (TREC DL 2019 passage: NIST's graded qrels). `triples.train.small` holds text
triples; they are mapped back to ids through the train queries and a 64-bit hash of every passage
text, so the normalised triples file is three ids per line and the texts stay in one place.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

from pipeline.data import Source, Split
from pipeline.download import download, extract_member
from pipeline.io import InputFormatError, atomic_output, iter_lines, read_collection, read_qrels, read_queries

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking/"
DL19_QRELS_URL = "https://trec.nist.gov/data/deep/2019qrels-pass.txt"
# MD5s as published by Anserini's MS MARCO guide and recorded by ir_datasets (msmarco-passage) and
# experimaestro-ir (triples.train.small).
MD5 = {"collectionandqueries.tar.gz": "31644046b18952c1386cd4564ba2ae69",
       "triples.train.small.tar.gz": "c13bf99ff23ca691105ad12eab837f84",
       "msmarco-test2019-queries.tsv.gz": "eda71eccbe4d251af83150abe065368c",
       "2019qrels-pass.txt": "2f4be390198da108f6845c822e5ada14"}
ARCHIVE_MEMBERS = ["collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.small.tsv",
                   "qrels.dev.small.tsv"]


def _text_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=8).digest(), "big")


def _id_triples(triples: Path, collection: Path, queries: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """Map text triples (query, positive, negative) back to (qid, pid, pid)."""
    qid_of: dict[str, str] = {}
    for qid, text in queries.items():
        qid_of.setdefault(" ".join(text.split()), qid)
    pid_of = {_text_key(text): pid for pid, text in read_collection(collection)}
    for number, line in iter_lines(triples):
        fields = line.split("\t")
        if len(fields) != 3:
            raise InputFormatError(triples, number, "'query<TAB>positive passage<TAB>negative passage'", line)
        qid = qid_of.get(" ".join(fields[0].split()))
        pos, neg = pid_of.get(_text_key(fields[1])), pid_of.get(_text_key(fields[2]))
        if qid is None:
            raise InputFormatError(triples, number, "a query text from queries.train.tsv", fields[0])
        if pos is None or neg is None:
            raise InputFormatError(triples, number, "passage texts from collection.tsv",
                                   fields[1] if pos is None else fields[2])
        yield qid, pos, neg


def msmarco_passage_source(download_dir: Path, base_url: str = OFFICIAL_URL,
                           dl19_qrels_url: str = DL19_QRELS_URL, md5: dict[str, str] | None = None) -> Source:
    """Download (or reuse) the official files under `download_dir` and describe them as a Source."""
    md5 = MD5 if md5 is None else md5
    root = Path(download_dir) / "msmarco-passage"
    base = base_url.rstrip("/") + "/"
    archive = download(base + "collectionandqueries.tar.gz", root / "collectionandqueries.tar.gz",
                       md5.get("collectionandqueries.tar.gz"))
    files = {name: extract_member(archive, name, root / name) for name in ARCHIVE_MEMBERS}
    triples_archive = download(base + "triples.train.small.tar.gz", root / "triples.train.small.tar.gz",
                               md5.get("triples.train.small.tar.gz"))
    text_triples = extract_member(triples_archive, "triples.train.small.tsv", root / "triples.train.small.tsv")
    dl19_gz = download(base + "msmarco-test2019-queries.tsv.gz", root / "msmarco-test2019-queries.tsv.gz",
                       md5.get("msmarco-test2019-queries.tsv.gz"))
    dl19_queries = root / "msmarco-test2019-queries.tsv"
    if not dl19_queries.exists():
        with gzip.open(dl19_gz, "rb") as source, atomic_output(dl19_queries, "wb") as out:
            out.write(source.read())
    dl19_qrels = download(dl19_qrels_url, root / "2019qrels-pass.txt", md5.get("2019qrels-pass.txt"))

    train_queries = read_queries(files["queries.train.tsv"])
    splits = {
        "train": Split(train_queries, read_qrels(files["qrels.train.tsv"]),
                       origin=f"{files['queries.train.tsv']} / {files['qrels.train.tsv']}"),
        "dev": Split(read_queries(files["queries.dev.small.tsv"]), read_qrels(files["qrels.dev.small.tsv"]),
                     origin=f"{files['queries.dev.small.tsv']} / {files['qrels.dev.small.tsv']}"),
        "dl19": Split(read_queries(dl19_queries), read_qrels(dl19_qrels), origin=f"{dl19_queries} / {dl19_qrels}"),
    }
    collection = files["collection.tsv"]
    return Source(collection=lambda: read_collection(collection), collection_origin=str(collection), splits=splits,
                  triples=lambda: _id_triples(text_triples, collection, train_queries),
                  triples_origin=str(text_triples),
                  notes=["triples.train.small mapped from text to ids"])
