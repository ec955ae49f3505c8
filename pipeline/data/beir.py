"""`beir`: a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), local or downloaded.

A passage is title + " " + text (BEIR's "flat" layout, as pyserini's BeirFlatCollection indexes
it); just the text when the title is empty. A split's queries are those its qrels judge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pipeline.data import Source, Split
from pipeline.download import download
from pipeline.io import InputFormatError, iter_lines

OFFICIAL_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/"
# MD5 of the official zips, from the dataset table of the BEIR repository's README (beir-cellar/beir).
MD5 = {"scifact": "5f7d1de60b170fc8027bb7898e2efca1", "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
       "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9", "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
       "scidocs": "38121350fc3a4d2f48850f6aff52e4a9", "quora": "18fb154900ba42a600f84b839c173167",
       "nq": "d4d3d2e48787a744b6f6e691ff534307", "hotpotqa": "f412724f78b0d91183a0e86805e16114",
       "fever": "5a818580227bfb4b35bb6fa46d9b6c03", "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
       "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c", "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
       "cqadupstack": "4e41456d7df8ee7760a7f866133bda78"}


def _records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    seen: set[str] = set()
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            detail = f"{err.msg} at column {err.colno}"
            raise InputFormatError(path, number, "one JSON object per line", detail) from None
        missing = [key for key in required if not isinstance(record, dict) or key not in record]
        if missing:
            raise InputFormatError(path, number, f"the field(s) {', '.join(missing)}", line)
        ident = str(record["_id"])
        if ident in seen:
            raise InputFormatError(path, number, f"a unique _id; {ident} appeared before")
        seen.add(ident)
        yield number, record


def _corpus(path: Path) -> Iterator[tuple[str, str]]:
    for number, record in _records(path, ("_id", "text")):
        text = " ".join(f"{record.get('title') or ''} {record['text'] or ''}".split())
        if not text:
            raise InputFormatError(path, number, f"non-empty title or text for {record['_id']}")
        yield str(record["_id"]), text


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for number, line in iter_lines(path):
        fields = line.split("\t")
        if number == 1 and fields[0] == "query-id":
            continue
        if not line.strip():
            continue
        if len(fields) != 3:
            raise InputFormatError(path, number, "'query-id<TAB>corpus-id<TAB>score'", line)
        try:
            qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
        except ValueError:
            raise InputFormatError(path, number, "an integer score", line) from None
    return qrels


def beir_source(name: str, location: str | Path, download_dir: Path, splits: list[str]) -> Source:
    """Read a BEIR dataset from a directory, or download `<location or official>/<name>.zip` first."""
    location = str(location or OFFICIAL_URL)
    if location.startswith(("http://", "https://")):
        import zipfile

        archive = download(location.rstrip("/") + f"/{name}.zip", Path(download_dir) / f"{name}.zip", MD5.get(name))
        root = Path(download_dir) / name
        if not (root / "corpus.jsonl").exists():
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(download_dir)
    else:
        root = Path(location)
    corpus, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    for needed in (corpus, queries_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{root}: no {needed.name}; not a BEIR dataset directory")
    texts = {str(record["_id"]): str(record["text"]) for _, record in _records(queries_path, ("_id", "text"))}
    prepared = {}
    for split in splits:
        qrels_path = root / "qrels" / f"{split}.tsv"
        if not qrels_path.is_file():
            available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
            raise FileNotFoundError(f"{root}: no qrels for split '{split}' (available: {available})")
        qrels = _qrels(qrels_path)
        prepared[split] = Split({qid: texts[qid] for qid in qrels if qid in texts}, qrels,
                                origin=f"{queries_path} / {qrels_path}")
    return Source(collection=lambda: _corpus(corpus), collection_origin=str(corpus), splits=prepared)
