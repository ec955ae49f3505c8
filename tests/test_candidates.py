"""Candidate lists read from files (rerank.candidates): MS MARCO's official lists over HTTP with their md5,
and runs of your own, turned into TREC runs that re-ranking stages read."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from pipeline.data.candidates import OfficialList, candidate_run
from pipeline.download import ChecksumError
from pipeline.formats import InputFormatError, read_run
from tests.http_fixture import serve

LINES = ["q1\tp9\tquery one\tpassage nine", "q2\tp1\tquery two\tpassage one", "q1\tp3\tquery one\tpassage three",
         "q9\tp2\tnot a dev query\tpassage two", "q1\tp5\tquery one\tpassage five"]


def _queries(tmp_path: Path) -> Path:
    path = tmp_path / "queries.dev.tsv"
    path.write_text("q1\tquery one\nq2\tquery two\nq3\tquery three\n")
    return path


def _tar_gz(folder: Path, member: str, text: str) -> Path:
    data = text.encode()
    archive = folder / "top1000.dev.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return archive


def test_official_list_is_downloaded_verified_and_keeps_file_order(tmp_path):
    served = tmp_path / "host"
    served.mkdir()
    archive = _tar_gz(served, "top1000.dev", "\n".join(LINES) + "\n")
    lists = {"top1000.dev": OfficialList(archive.name, hashlib.md5(archive.read_bytes()).hexdigest(), "top1000.dev")}
    with serve(served) as (url, _):
        record = candidate_run("top1000.dev", _queries(tmp_path), tmp_path / "run.trec", tmp_path / "downloads",
                               url, tag="top1000", official=lists)
    run = read_run(tmp_path / "run.trec")
    # No scores in the file: the first line of a query ranks first; q9 is not a dev query; q3 has no candidates.
    assert [list(run[q]) for q in sorted(run)] == [["p9", "p3", "p5"], ["p1"]]
    assert run["q1"]["p9"] > run["q1"]["p3"] > run["q1"]["p5"]
    assert record == {"source": "top1000.dev", "queries": 2, "queries_without_candidates": 1, "candidates": 4,
                      "lines_of_other_queries": 1}
    assert (tmp_path / "downloads" / "msmarco-passage" / archive.name).is_file()  # kept for the next split/run


def test_official_list_with_another_md5_is_refused(tmp_path):
    served = tmp_path / "host"
    served.mkdir()
    (served / "top1000.dl19.tsv.gz").write_bytes(gzip.compress("\n".join(LINES).encode()))
    lists = {"top1000.dl19": OfficialList("top1000.dl19.tsv.gz", "0" * 32, None)}
    with serve(served) as (url, _), pytest.raises(ChecksumError):
        candidate_run("top1000.dl19", _queries(tmp_path), tmp_path / "run.trec", tmp_path / "downloads", url,
                      official=lists)
    assert not (tmp_path / "run.trec").exists()


def test_a_run_of_your_own_keeps_its_scores(tmp_path):
    own = tmp_path / "mine.trec"
    own.write_text("q1 Q0 p1 1 3.5 x\nq1 Q0 p2 2 7.0 x\nq2 Q0 p1 1 1.0 x\n")
    candidate_run(str(own), _queries(tmp_path), tmp_path / "run.trec")
    run = read_run(tmp_path / "run.trec")
    assert run == {"q1": {"p2": 7.0, "p1": 3.5}, "q2": {"p1": 1.0}}


def test_a_bad_line_names_file_and_line(tmp_path):
    own = tmp_path / "mine.tsv"
    own.write_text("q1\tp1\tquery\tpassage\nq1 p2 broken\n")
    with pytest.raises(InputFormatError, match=r"mine.tsv.*line 2"):
        candidate_run(str(own), _queries(tmp_path), tmp_path / "run.trec")


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"top1000\.eval"):
        candidate_run("top1000.eval", _queries(tmp_path), tmp_path / "run.trec")
