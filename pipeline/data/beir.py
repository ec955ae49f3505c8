"""`beir`: a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), local or downloaded.

A passage is title + " " + text (BEIR's "flat" layout, as pyserini's BeirFlatCollection indexes
it); just the text when the title is empty. A split's queries are those its qrels judge. When
`location` is an http(s) base URL, `<location>/<name>.zip` is downloaded into `download_dir` and
the files needed are extracted once into `<download_dir>/<name>/`. A passage with neither title
nor text, or a query without text, stops the read unless `empty_text` is drop (see
`pipeline.data.prepare`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from pipeline.archives import extract_member
from pipeline.data import Source, Split, refuse_empty
from pipeline.download import CHECKSUMS, download
from pipeline.formats import InputFormatError, iter_lines

OFFICIAL_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/"
# MD5 of the official zips, from the dataset table of the BEIR README (beir-cellar/beir @20b76b0d);
# allenai/ir_datasets' downloads.json ("beir") records the same values. webis-touche2020 is v2,
# the zip now on the official server.
MD5 = {"scifact": "5f7d1de60b170fc8027bb7898e2efca1", "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
       "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9", "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
       "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1", "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
       "quora": "18fb154900ba42a600f84b839c173167", "nq": "d4d3d2e48787a744b6f6e691ff534307",
       "hotpotqa": "f412724f78b0d91183a0e86805e16114", "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
       "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
       "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
       "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
       "cqadupstack": "4e41456d7df8ee7760a7f866133bda78", "msmarco": "444067daf65d982533ea17ebd59501e4"}
QRELS_HEADER = ["query-id", "corpus-id", "score"]


def _records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, str, dict]]:
    """(line, _id, record) of a JSON-lines file, refusing bad JSON, missing fields and repeated ids."""
    seen: set[str] = set()
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            detail = f"{err.msg} at column {err.colno}"
            raise InputFormatError(path, number, "one JSON object per line", detail) from None
        missing = [key for key in required if not isinstance(record, dict) or record.get(key) is None]
        if missing:
            raise InputFormatError(path, number, f"the field(s) {', '.join(missing)}", line)
        ident = str(record["_id"])
        # The TSV and TREC files written downstream cannot hold an empty id or one with whitespace.
        if not ident or re.search(r"\s", ident):
            raise InputFormatError(path, number, "an _id without whitespace", ident)
        if ident in seen:
            raise InputFormatError(path, number, f"a unique _id; {ident} appeared before")
        seen.add(ident)
        yield number, ident, record


def _corpus(path: Path, empty_text: str) -> Iterator[tuple[str, str]]:
    for number, ident, record in _records(path, ("_id", "text")):
        text = " ".join(f"{record.get('title') or ''} {record['text']}".split())
        if not text:
            refuse_empty(path, number, f"non-empty title or text for {ident}", empty_text)
        yield ident, text


def _queries(path: Path, empty_text: str) -> dict[str, str]:
    queries = {}
    for number, ident, record in _records(path, ("_id", "text")):
        text = " ".join(str(record["text"]).split())
        if not text:
            refuse_empty(path, number, f"non-empty text for query {ident}", empty_text)
        queries[ident] = text
    return queries


def _qrels(path: Path, queries: dict[str, str], queries_path: Path) -> dict[str, dict[str, int]]:
    """Judgements of one split; rel 0 rows are kept (they are judgements too)."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in iter_lines(path):
        fields = [field.strip() for field in line.split("\t")]
        if (number == 1 and fields == QRELS_HEADER) or not line.strip():
            continue
        if len(fields) != 3 or not all(fields):
            raise InputFormatError(path, number, "'query-id<TAB>corpus-id<TAB>score'", line)
        qid, docid, score = fields
        try:
            rel = int(score)
        except ValueError:
            raise InputFormatError(path, number, "an integer score", line) from None
        if qid not in queries:
            raise InputFormatError(path, number, f"query ids from {queries_path}; {qid} is not there")
        judged = qrels.setdefault(qid, {})
        if judged.get(docid, rel) != rel:
            raise InputFormatError(path, number, f"one score per (query, doc); {qid} {docid} judged twice")
        judged[docid] = rel
    return qrels


def _fetch(name: str, base_url: str, download_dir: Path, splits: list[str]) -> Path:
    """Extract what `splits` need from `<base_url>/<name>.zip` (downloaded once) into `download_dir/name`."""
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"BEIR dataset name {name!r}: expected letters, digits, '.', '_' or '-'")
    root = download_dir / name
    missing = [member for member in ("corpus.jsonl", "queries.jsonl", *(f"qrels/{s}.tsv" for s in splits))
               if not (root / member).is_file()]
    if missing:
        # A dataset missing from MD5 is pinned on first use in `<download_dir>/checksums.tsv`.
        archive = download(f"{base_url.rstrip('/')}/{name}.zip", download_dir / f"{name}.zip", MD5.get(name),
                           checksums=download_dir / CHECKSUMS)
        for member in missing:
            extract_member(archive, member, root / member)
    return root


def beir_source(name: str, location: str | Path, download_dir: Path, splits: list[str],
                empty_text: str = "error") -> Source:
    """Read a BEIR dataset from a directory, or download `<location or official>/<name>.zip` first."""
    location = str(location or OFFICIAL_URL)
    if location.startswith(("http://", "https://")):
        root = _fetch(name, location, Path(download_dir), splits)
    else:
        root = Path(location)
    corpus, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    for needed in (corpus, queries_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{root}: no {needed.name}; not a BEIR dataset directory")
    texts = _queries(queries_path, empty_text)
    prepared = {}
    for split in splits:
        qrels_path = root / "qrels" / f"{split}.tsv"
        if not qrels_path.is_file():
            available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise FileNotFoundError(f"{root}: no qrels for split '{split}' (available: {available})")
        qrels = _qrels(qrels_path, texts, queries_path)
        prepared[split] = Split({qid: texts[qid] for qid in qrels}, qrels,
                                origin=f"{qrels_path} / {queries_path}")
    return Source(collection=lambda: _corpus(corpus, empty_text), collection_origin=str(corpus), splits=prepared)
