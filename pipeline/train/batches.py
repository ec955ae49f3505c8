"""Training triples as a deterministic stream of global batches.

The order of triples is a fresh seeded permutation per epoch, and global batch k is a pure
function of (seed, k): resuming at step k needs no saved data state, and a run split over ranks or
over accumulation steps sees exactly the triples a single process would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.formats import InputFormatError, iter_lines, read_collection, read_queries, read_teacher_scores

log = logging.getLogger(__name__)


@dataclass
class Batch:
    queries: list[str]
    positives: list[str]
    negatives: list[str]
    teacher_pairs: list[tuple[float, float]] | None = None  # (positive, negative) scores from a score file
    labelled: list[bool] | None = None  # False: a generated query, labelled by the teacher alone


def join_passages(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-passage tensors of consecutive slices of a batch (micro-batches, or ranks), each ordered as
    a `Batch` is encoded, [its positives, its negatives], joined as the whole batch's [all positives,
    all negatives]: the column order of the loss's score matrices (see `pipeline.train.losses`)."""
    return torch.cat([part[: len(part) // 2] for part in parts] + [part[len(part) // 2:] for part in parts])


UNSCORED = ("error", "drop")  # what to do with a triple the teacher score file lacks


class TripleBatches:
    def __init__(self, triples: Path, queries: Path, collection: Path, batch_size: int, seed: int,
                 teacher_scores: Path | None = None, generated: dict[str, list[str]] | None = None,
                 generated_ratio: float = 0.0, unscored: str = "error"):
        """`generated` (pid -> queries generated from that passage) replaces the query of a seeded
        `generated_ratio` share of each global batch's triples by one generated from its positive. A triple that
        `teacher_scores` lacks stops with its file and line (`unscored` "error"), or is left out and counted
        ("drop")."""
        if unscored not in UNSCORED:
            raise ValueError(f"unscored must be one of {UNSCORED}, not {unscored!r}")
        if not 0.0 <= generated_ratio <= 1.0:
            raise ValueError(f"generated_ratio must lie in [0, 1], not {generated_ratio}")
        self.batch_size, self.seed = batch_size, seed
        self.generated = {pid: queries for pid, queries in (generated or {}).items() if queries}
        self.generated_ratio = generated_ratio if self.generated else 0.0
        texts = read_queries(queries)
        rows: list[tuple[str, str, str]] = []
        needed: set[str] = set()
        for number, line in iter_lines(triples):
            fields = line.split("\t")
            if len(fields) != 3 or not all(fields):
                raise InputFormatError(triples, number, "'qid<TAB>positive pid<TAB>negative pid'", line)
            if fields[0] not in texts:
                raise InputFormatError(triples, number, f"a qid from {queries}; {fields[0]} is not there")
            rows.append((fields[0], fields[1], fields[2]))
            needed.update(fields[1:])
        if not rows:
            raise InputFormatError(triples, None, "at least one training triple")
        self.passages = {pid: text for pid, text in read_collection(collection) if pid in needed}
        for number, (_, pos, neg) in enumerate(rows, start=1):
            for pid in (pos, neg):
                if pid not in self.passages:
                    raise InputFormatError(triples, number, f"pids from {collection}; {pid} is not there")
        self.query_texts = {qid: texts[qid] for qid, _, _ in rows}
        self.scores = None
        self.unscored = 0  # triples left out because the score file lacks them (unscored: drop)
        if teacher_scores is not None:
            scores = read_teacher_scores(teacher_scores, set(rows))
            scored = [row in scores for row in rows]
            if unscored == "error" and not all(scored):
                missing = scored.index(False)
                raise InputFormatError(triples, missing + 1, f"a triple scored in {teacher_scores} (or leave the "
                                       "unscored ones out: unscored drop)", "\t".join(rows[missing]))
            self.unscored = scored.count(False)
            rows = [row for row, kept in zip(rows, scored, strict=True) if kept]
            if not rows:
                raise InputFormatError(teacher_scores, None, f"scores of at least one triple of {triples}")
            if self.unscored:
                log.warning("left out %d of %d triples of %s: %s does not score them", self.unscored,
                            self.unscored + len(rows), triples, teacher_scores)
            self.scores = [scores[row] for row in rows]
        self.rows = rows
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))}
        return self._orders[epoch]

    def _global_rows(self, step: int) -> list[int]:
        picked = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, index = divmod(position, len(self.rows))
            picked.append(int(self._order(epoch)[index]))
        return picked

    def global_batch(self, step: int) -> list[tuple[str, str, str]]:
        """The `batch_size` triples of optimisation step `step` (0-based), crossing epochs as needed."""
        return [self.rows[row] for row in self._global_rows(step)]

    def _queries(self, step: int, rows: list[int]) -> tuple[list[str], list[bool]]:
        """Query texts of global batch `step`, a seeded share of them generated from the positive."""
        texts = [self.query_texts[self.rows[row][0]] for row in rows]
        labelled = [True] * len(rows)
        if self.generated_ratio:
            rng = np.random.default_rng([self.seed, step, 1])
            chosen = rng.choice(len(rows), size=round(self.generated_ratio * len(rows)), replace=False)
            for position in sorted(chosen):
                options = self.generated.get(self.rows[rows[position]][1])
                if options:
                    texts[position], labelled[position] = options[rng.integers(len(options))], False
        return texts, labelled

    def micro_batch(self, step: int, part: int, parts: int) -> Batch:
        """Slice `part` of `parts` equal slices of global batch `step`, as texts."""
        rows = self._global_rows(step)
        queries, labelled = self._queries(step, rows)
        size = len(rows) // parts
        piece = slice(part * size, (part + 1) * size)
        triples = [self.rows[row] for row in rows[piece]]
        return Batch(queries[piece], [self.passages[p] for _, p, _ in triples],
                     [self.passages[n] for _, _, n in triples],
                     None if self.scores is None else [self.scores[row] for row in rows[piece]],
                     labelled[piece] if self.generated_ratio else None)
