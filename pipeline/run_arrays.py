"""Runs as arrays, for the stages that work on whole runs at once (fusion, alpha tuning).

A run's docids become integer codes into one sorted vocabulary shared by the runs read together, so
code order is the docids' string order: the order trec_eval breaks ties by. Reading uses pandas' C
parser; writing formats every line in one go, in the format of pipeline.formats.write_run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, Run, check_run_lines

LINES_PER_WRITE = 1_000_000


@dataclass
class RunArrays:
    """A run as arrays: query i's hits are entries offsets[i]:offsets[i + 1] of `docids` and `scores`;
    docids are codes into a sorted vocabulary shared with the run it is fused with."""

    qids: np.ndarray  # (Q,) object
    offsets: np.ndarray  # (Q + 1,) int64
    docids: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float64

    def slice(self, start: int, stop: int) -> RunArrays:
        """Queries start..stop - 1, as views (no copy)."""
        lo, hi = self.offsets[start], self.offsets[stop]
        return RunArrays(self.qids[start:stop], self.offsets[start:stop + 1] - lo, self.docids[lo:hi],
                         self.scores[lo:hi])

    def take(self, rows: np.ndarray) -> RunArrays:
        """The queries at `rows`, in that order."""
        lengths = np.diff(self.offsets)[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        entries = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - self.offsets[rows], lengths)
        return RunArrays(self.qids[rows], offsets, self.docids[entries], self.scores[entries])

    def in_rank_order(self) -> RunArrays:
        """Each query's hits in trec_eval's order: score descending, then docid descending (codes ascend as the
        docids' strings do). A run already in that order, as the pipeline writes them, is returned as it is; one
        in score order whose ties are not in docid order (Lucene breaks them by its own ids) has only its ties
        sorted, by one integer sort."""
        query = np.repeat(np.arange(len(self.qids)), np.diff(self.offsets))
        same_query = query[1:] == query[:-1]
        tied = same_query & (self.scores[:-1] == self.scores[1:])
        if not (same_query & (self.scores[:-1] < self.scores[1:])).any():  # in score order
            if not (tied & (self.docids[:-1] < self.docids[1:])).any():
                return self
            group = np.concatenate([[0], np.cumsum(~tied)])  # one query's hits of one score
            order = np.argsort(group * (int(self.docids.max()) + 1) - self.docids)
        else:
            order = np.lexsort((-self.docids, -self.scores, query))
        return RunArrays(self.qids, self.offsets, self.docids[order], self.scores[order])

    @staticmethod
    def concatenate(parts: list[RunArrays]) -> RunArrays:
        lengths = np.concatenate([np.diff(part.offsets) for part in parts])
        return RunArrays(np.concatenate([part.qids for part in parts]), np.concatenate([[0], np.cumsum(lengths)]),
                         np.concatenate([part.docids for part in parts]),
                         np.concatenate([part.scores for part in parts]))


def read_run_frame(path: Path) -> pd.DataFrame:
    """A TREC run file straight into columns qid, docid, score (C parser).

    Strings are kept as written (a docid "NA" stays "NA"). A file the fast path finds wrong (a line
    without six fields, a score that is not a finite number: NaN or inf) is read again line by line
    for the error, which names the file and the first bad line as pipeline.formats.read_run does.
    """
    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, names=["qid", "q0", "docid", "rank", "score", "tag"],
                            dtype={"qid": str, "docid": str, "score": np.float64}, engine="c", keep_default_na=False)
    except ValueError:  # pandas' ParserError (a line with more fields) is one, as is a non-numeric score
        frame = None
    # Without NA values a missing field reads as "": the tag is the last, so a short line leaves it empty.
    if frame is None or not np.isfinite(frame["score"].to_numpy()).all() or frame["tag"].eq("").any():
        check_run_lines(path)
        raise InputFormatError(path, None, "6 fields 'qid Q0 docid rank score tag' on every line, finite scores")
    return frame[["qid", "docid", "score"]]


def run_frame(run: Run) -> pd.DataFrame:
    """A {qid: {docid: score}} run as columns qid, docid, score."""
    rows = [(qid, docid, score) for qid, hits in run.items() for docid, score in hits.items()]
    return pd.DataFrame(rows, columns=["qid", "docid", "score"]).astype({"qid": str, "docid": str, "score": float})


def encode_frames(*frames: pd.DataFrame) -> tuple[list[RunArrays], np.ndarray]:
    """Runs (columns qid, docid, score) as RunArrays over their shared, sorted docid vocabulary (queries in order of
    appearance; a query's hits in the order the frame lists them)."""
    docids = [frame["docid"].to_numpy().astype(str) for frame in frames]
    vocabulary, codes = np.unique(np.concatenate(docids), return_inverse=True)
    runs = []
    for frame, run_codes in zip(frames, np.split(codes.astype(np.int64), np.cumsum([len(f) for f in frames])[:-1]),
                                strict=True):
        query_codes, qids = pd.factorize(frame["qid"].to_numpy())
        scores = frame["score"].to_numpy(dtype=np.float64)
        if np.any(query_codes[1:] < query_codes[:-1]):  # a query's hits not contiguous: group them, stably
            order = np.argsort(query_codes, kind="stable")
            query_codes, run_codes, scores = query_codes[order], run_codes[order], scores[order]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(query_codes, minlength=len(qids)))])
        runs.append(RunArrays(np.asarray(qids, dtype=object), offsets, run_codes, scores))
    return runs, vocabulary


def encode_runs(sparse: pd.DataFrame, dense: pd.DataFrame) -> tuple[RunArrays, RunArrays, np.ndarray]:
    """Both runs of a fusion as RunArrays over their shared, sorted docid vocabulary."""
    (sparse_run, dense_run), vocabulary = encode_frames(sparse, dense)
    return sparse_run, dense_run, vocabulary


def docid_lookup(vocabulary: np.ndarray, docids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each docid's code in the sorted vocabulary, and whether the vocabulary holds it at all."""
    wanted = np.array(docids, dtype=str)
    positions = np.searchsorted(vocabulary, wanted)
    found = positions < len(vocabulary)
    found[found] = vocabulary[positions[found]] == wanted[found]
    return positions, found


def docid_codes(vocabulary: np.ndarray, docids: list[str]) -> np.ndarray:
    """Codes of those `docids` the vocabulary holds (the others are in neither run)."""
    positions, found = docid_lookup(vocabulary, docids)
    return positions[found]


def write_run_arrays(path: Path, run: RunArrays, vocabulary: np.ndarray, tag: str, exact: bool = False) -> None:
    """A TREC run file in the format of pipeline.formats.write_run (scores with 6 decimals), written atomically.
    `exact` writes each score's shortest exact form instead, where 6 decimals would tie what a fusion ranked apart.
    Lines are formatted by f-strings, a million at a time: 2-3x faster than DataFrame.to_csv's float_format."""
    lengths = np.diff(run.offsets)
    qids = np.repeat(run.qids, lengths).tolist()
    ranks = (np.arange(len(run.docids)) - np.repeat(run.offsets[:-1], lengths) + 1).tolist()
    docids = vocabulary[run.docids].tolist()
    scores = run.scores.tolist()
    with atomic_output(path) as out:
        for start in range(0, len(scores), LINES_PER_WRITE):
            rows = zip(qids[start:start + LINES_PER_WRITE], docids[start:start + LINES_PER_WRITE],
                       ranks[start:start + LINES_PER_WRITE], scores[start:start + LINES_PER_WRITE], strict=True)
            if exact:
                out.write("".join([f"{qid} Q0 {docid} {rank} {score!r} {tag}\n" for qid, docid, rank, score in rows]))
            else:
                out.write("".join([f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n" for qid, docid, rank, score in rows]))
