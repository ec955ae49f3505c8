"""Dataset sources. Each source turns its native layout into a `Source`; `prepare` writes it out."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pipeline.formats import InputFormatError, Qrels, iter_id_text

EMPTY_TEXT = ("error", "drop")


@dataclass
class Split:
    """Queries and judgements of one split; `origin` names the files they came from (for errors)."""

    queries: dict[str, str]
    qrels: Qrels
    origin: str


@dataclass
class Source:
    """A dataset before normalisation.

    `collection` is a zero-argument callable returning a fresh stream of (pid, text), so that the
    writer can stream a multi-GB collection once without holding it. `triples`, when the dataset
    has official training triples, streams (qid, positive pid, negative pid). A passage or query
    text is '' only when the source was built with empty_text drop (prepare_data leaves it out).
    """

    collection: Callable[[], Iterable[tuple[str, str]]]
    collection_origin: str
    splits: dict[str, Split]
    triples: Callable[[], Iterable[tuple[str, str, str]]] | None = None
    triples_origin: str = "triples"
    notes: list[str] = field(default_factory=list)


def refuse_empty(path: str | os.PathLike, line: int | None, expected: str, empty_text: str) -> None:
    """Stop at an empty text unless `empty_text` is drop (prepare_data then leaves the record out)."""
    if empty_text == "error":
        raise InputFormatError(path, line, f"{expected} (or set dataset.empty_text to drop to leave it out)")


def read_id_text(path: str | os.PathLike, what: str, empty_text: str) -> Iterator[tuple[str, str]]:
    """(id, text) of a source's `id<TAB>text` file, checked line by line as `pipeline.formats` reads them.

    Unlike `pipeline.formats.iter_id_text` (which reads the normalised files, where empty text is a bug), an
    empty or whitespace-only text comes through as '' when `empty_text` is drop, for prepare_data to
    count and leave out.
    """
    for number, ident, text in iter_id_text(path, what, allow_empty=True):
        if not text:
            refuse_empty(path, number, f"non-empty text for {what} {ident}", empty_text)
        yield ident, text
