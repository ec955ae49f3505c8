"""`msmarco-local`: a directory already in MS MARCO layout (e.g. ../shared/data/msmarco-dl-mini).

Expected: `collection.tsv` (pid<TAB>text); per split, queries in `queries.<split>.tsv` or
`topics.<split>.(txt|tsv)` (qid<TAB>text) and judgements in `qrels.<split>.(txt|tsv)` (TREC
qrels); optionally `triples.train.tsv` with id triples. Files that do not follow the naming are
given per split as `files: {split: {queries: name, qrels: name}}`. A passage or query with empty
text stops the read unless `empty_text` is drop (see `pipeline.data.prepare`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.data import Source, Split, read_id_text
from pipeline.formats import read_qrels, read_triples

QUERY_NAMES = ("queries.{}.tsv", "topics.{}.txt", "topics.{}.tsv")
QRELS_NAMES = ("qrels.{}.txt", "qrels.{}.tsv")


def _find(directory: Path, split: str, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        candidate = directory / pattern.format(split)
        if candidate.is_file():
            return candidate
    tried = ", ".join(pattern.format(split) for pattern in patterns)
    raise FileNotFoundError(f"{directory}: no {what} file for split '{split}' (looked for {tried}); "
                            f"name it in config dataset.files.{split}.{what}")


def msmarco_local_source(directory: Path, splits: list[str], files: Mapping[str, Mapping[str, str]] | None = None,
                         empty_text: str = "error") -> Source:
    """Read an MS MARCO-layout directory; every file is checked line by line when it is read."""
    directory = Path(directory)
    collection = directory / "collection.tsv"
    if not collection.is_file():
        raise FileNotFoundError(f"{directory}: no collection.tsv (pid<TAB>text) in this msmarco-local dataset")
    files = files or {}
    prepared = {}
    for split in splits:
        given = files.get(split, {})
        queries = (directory / given["queries"] if "queries" in given
                   else _find(directory, split, QUERY_NAMES, "queries"))
        qrels = directory / given["qrels"] if "qrels" in given else _find(directory, split, QRELS_NAMES, "qrels")
        prepared[split] = Split(dict(read_id_text(queries, "qid", empty_text)), read_qrels(qrels),
                                origin=f"{queries} / {qrels}")
    triples_path = directory / "triples.train.tsv"
    triples = (lambda: read_triples(triples_path)) if triples_path.is_file() else None
    return Source(collection=lambda: read_id_text(collection, "pid", empty_text), collection_origin=str(collection),
                  splits=prepared, triples=triples, triples_origin=str(triples_path))
