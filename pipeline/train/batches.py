"""Training triples as a deterministic stream of global batches.

The order of triples is a fresh seeded permutation per epoch, and global batch k is a pure
function of (seed, k): resuming at step k needs no saved data state, and a run split over ranks or
over accumulation steps sees exactly the triples a single process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import InputFormatError, iter_lines, read_collection, read_queries


@dataclass
class Batch:
    queries: list[str]
    positives: list[str]
    negatives: list[str]


class TripleBatches:
    def __init__(self, triples: Path, queries: Path, collection: Path, batch_size: int, seed: int):
        self.batch_size, self.seed = batch_size, seed
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
        self.rows = rows
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))}
        return self._orders[epoch]

    def global_batch(self, step: int) -> list[tuple[str, str, str]]:
        """The `batch_size` triples of optimisation step `step` (0-based), crossing epochs as needed."""
        picked = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, index = divmod(position, len(self.rows))
            picked.append(self.rows[self._order(epoch)[index]])
        return picked

    def micro_batch(self, step: int, part: int, parts: int) -> Batch:
        """Slice `part` of `parts` equal slices of global batch `step`, as texts."""
        triples = self.global_batch(step)
        size = len(triples) // parts
        chunk = triples[part * size:(part + 1) * size]
        return Batch([self.query_texts[q] for q, _, _ in chunk], [self.passages[p] for _, p, _ in chunk],
                     [self.passages[n] for _, _, n in chunk])
