"""`msmarco-passage`: the official MS MARCO passage files and TREC DL 2019, downloaded and verified.

Splits: `train` (queries.train + qrels.train), `dev` (dev.small: the 6,980 queries the paper
reports) and `dl19` (TREC DL 2019 passage: NIST's graded qrels). `triples.train.small` holds text
triples; they are mapped back to ids through the train queries and a 64-bit hash of every passage
text, so the normalised triples file is three ids per line and the texts stay in one place.

Archive members are extracted once under `<download_dir>/msmarco-passage/` and reused. The text
triples (27 GB uncompressed) are streamed straight out of their archive when `triples` is called,
never extracted; a `triples.train.small.tsv` already extracted there is read instead. A passage or
query with empty text stops the read unless `empty_text` is drop (see `pipeline.data.prepare`).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.archives import extract_member, open_member
from pipeline.data import Source, Split, read_id_text
from pipeline.download import CHECKSUMS, download
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, iter_lines, read_qrels

OFFICIAL_URL = "https://msmarco.z22.web.core.windows.net/msmarcoranking/"
DL19_QRELS_URL = "https://trec.nist.gov/data/deep/2019qrels-pass.txt"
# MD5s from allenai/ir_datasets, ir_datasets/etc/downloads.json ("msmarco-passage": collectionandqueries,
# train/docpairs/small, trec-dl-2019/queries, trec-dl-2019/qrels) at commit 02a8f21c0f51. The first
# is also the one Anserini's MS MARCO passage guide publishes; the last matches the copy of NIST's
# file in ../shared/data/msmarco-dl-mini.
MD5 = {"collectionandqueries.tar.gz": "31644046b18952c1386cd4564ba2ae69",
       "triples.train.small.tar.gz": "c13bf99ff23ca691105ad12eab837f84",
       "msmarco-test2019-queries.tsv.gz": "eda71eccbe4d251af83150abe065368c",
       "2019qrels-pass.txt": "2f4be390198da108f6845c822e5ada14"}
# Azure blob storage serves anonymous requests with its oldest API version unless asked for a newer
# one, and that version ignores open-ended `Range: bytes=N-` requests, so an interrupted 8 GB download
# could not resume. ir_datasets sends the same header for these files.
AZURE_HEADERS = {"x-ms-version": "2019-12-12"}
ARCHIVE_MEMBERS = ["collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.small.tsv",
                   "qrels.dev.small.tsv"]
TRIPLES_MEMBER = "triples.train.small.tsv"


def _text_key(text: str) -> int:
    digest = hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def decoded_lines(stream: BinaryIO, origin: str) -> Iterator[tuple[int, str]]:
    """(line number, line) from a binary stream, strict UTF-8, as `pipeline.formats.iter_lines` does for files."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            detail = f"invalid byte at column {err.start + 1}"
            raise InputFormatError(origin, number, "UTF-8 text", detail) from None
        yield number, line.rstrip("\r\n")


def _id_triples(lines: Iterable[tuple[int, str]], origin: str, passages: Iterable[tuple[str, str]],
                queries: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """Map text triples (query, positive, negative) back to (qid, pid, pid)."""
    qid_of: dict[str, str] = {}
    for qid, text in queries.items():
        qid_of.setdefault(" ".join(text.split()), qid)
    pid_of = {_text_key(text): pid for pid, text in passages}
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 3:
            raise InputFormatError(origin, number, "'query<TAB>positive passage<TAB>negative passage'", line)
        qid = qid_of.get(" ".join(fields[0].split()))
        pos, neg = pid_of.get(_text_key(fields[1])), pid_of.get(_text_key(fields[2]))
        if qid is None:
            raise InputFormatError(origin, number, "a query text from queries.train.tsv", fields[0])
        if pos is None or neg is None:
            raise InputFormatError(origin, number, "passage texts from collection.tsv",
                                   fields[1] if pos is None else fields[2])
        yield qid, pos, neg


def msmarco_passage_source(download_dir: Path, base_url: str = OFFICIAL_URL,
                           dl19_qrels_url: str = DL19_QRELS_URL, md5: dict[str, str] | None = None,
                           empty_text: str = "error") -> Source:
    """Download (or reuse) the official files under `download_dir` and describe them as a Source."""
    md5 = MD5 if md5 is None else md5
    root = Path(download_dir) / "msmarco-passage"
    base = base_url.rstrip("/") + "/"
    # A file missing from `md5` is pinned on first use in `<download_dir>/checksums.tsv`.
    checksums = Path(download_dir) / CHECKSUMS

    def fetch(name: str) -> Path:
        return download(base + name, root / name, md5.get(name), headers=AZURE_HEADERS, checksums=checksums)

    files = {name: root / name for name in ARCHIVE_MEMBERS}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        archive = fetch("collectionandqueries.tar.gz")
        for name in missing:
            extract_member(archive, name, files[name])
    dl19_queries = root / "msmarco-test2019-queries.tsv"
    if not dl19_queries.exists():
        packed = fetch("msmarco-test2019-queries.tsv.gz")
        with gzip.open(packed, "rb") as source, atomic_output(dl19_queries, "wb") as out:
            out.write(source.read())
    dl19_qrels = download(dl19_qrels_url, root / "2019qrels-pass.txt", md5.get("2019qrels-pass.txt"),
                          checksums=checksums)

    def split(queries: Path, qrels: Path) -> Split:
        return Split(dict(read_id_text(queries, "qid", empty_text)), read_qrels(qrels), origin=f"{queries} / {qrels}")

    splits = {"train": split(files["queries.train.tsv"], files["qrels.train.tsv"]),
              "dev": split(files["queries.dev.small.tsv"], files["qrels.dev.small.tsv"]),
              "dl19": split(dl19_queries, dl19_qrels)}
    train_queries = splits["train"].queries
    collection = files["collection.tsv"]

    def passages() -> Iterator[tuple[str, str]]:
        return read_id_text(collection, "pid", empty_text)

    extracted = root / TRIPLES_MEMBER
    archived = root / "triples.train.small.tar.gz"
    # Errors name the member inside the archive unless the user extracted it themselves.
    triples_origin = str(extracted) if extracted.is_file() else f"{archived}:{TRIPLES_MEMBER}"

    def triples() -> Iterator[tuple[str, str, str]]:
        if extracted.is_file():
            yield from _id_triples(iter_lines(extracted), str(extracted), passages(), train_queries)
            return
        with open_member(fetch(archived.name), TRIPLES_MEMBER) as stream:
            yield from _id_triples(decoded_lines(stream, triples_origin), triples_origin, passages(), train_queries)

    return Source(collection=passages, collection_origin=str(collection), splits=splits, triples=triples,
                  triples_origin=triples_origin, notes=["triples.train.small mapped from text to ids"])
