"""Dataset sources. Each source turns its native layout into a `Source`; `prepare` writes it out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline.io import Qrels


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
    has official training triples, streams (qid, positive pid, negative pid).
    """

    collection: Callable[[], Iterable[tuple[str, str]]]
    collection_origin: str
    splits: dict[str, Split]
    triples: Callable[[], Iterable[tuple[str, str, str]]] | None = None
    triples_origin: str = "triples"
    notes: list[str] = field(default_factory=list)
