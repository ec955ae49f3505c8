import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.durable import atomic_directory, atomic_output
from pipeline.formats import (
    InputFormatError,
    read_collection,
    read_qrels,
    read_queries,
    read_run,
    read_triples,
    write_run,
)
from pipeline.run_arrays import RunArrays, read_run_frame
from pipeline.shards import file_checksum, npy_record, verify_npy
from tests.conftest import ROOT, hang_guard


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("1\tfirst\n2 no tab here\n", 2, "'pid<TAB>text'"),
        ("1\tfirst\n1\tagain\n", 2, "unique pid"),
        ("1\tfirst\n2\t   \n", 2, "non-empty text"),
        ("\tno id\n", 1, "'pid<TAB>text'"),
    ],
)
def test_collection_errors_name_file_and_line(tmp_path, content, line, expected):
    path = write(tmp_path, "collection.tsv", content)
    with pytest.raises(InputFormatError) as err:
        list(read_collection(path))
    assert err.value.line == line and str(path) in str(err.value) and expected in str(err.value)


def test_non_utf8_bytes_are_reported_with_line_and_column(tmp_path):
    path = write(tmp_path, "queries.tsv", b"1\tok\n2\tcaf\xe9\n")
    with pytest.raises(InputFormatError, match=r"line 2: expected UTF-8 text.*column 6"):
        read_queries(path)


def test_qrels_and_runs_parse_and_reject_bad_lines(tmp_path):
    qrels = read_qrels(write(tmp_path, "q.txt", "1 0 a 1\n1\t0\tb\t0\n\n2 0 a 2\n"))
    assert qrels == {"1": {"a": 1, "b": 0}, "2": {"a": 2}}
    with pytest.raises(InputFormatError, match="line 1: expected an integer relevance"):
        read_qrels(write(tmp_path, "bad.txt", "1 0 a high\n"))
    with pytest.raises(InputFormatError, match="line 2: expected 6 fields"):
        read_run(write(tmp_path, "r.trec", "1 Q0 a 1 2.0 t\n1 Q0 b 2\n"))
    with pytest.raises(InputFormatError, match="line 2: expected each docid once per query"):
        read_run(write(tmp_path, "r2.trec", "1 Q0 a 1 2.0 t\n1 Q0 a 2 1.0 t\n"))
    with pytest.raises(InputFormatError, match="line 1"):
        read_triples(write(tmp_path, "t.tsv", "1\t2\n"))


def test_run_round_trip(tmp_path):
    path = tmp_path / "run.trec"
    write_run(path, {"q1": [("d2", 3.5), ("d1", 1.25)], "q2": [("d1", 0.5)]}, "tag")
    assert path.read_text().splitlines()[0] == "q1 Q0 d2 1 3.500000 tag"
    assert read_run(path) == {"q1": {"d2": 3.5, "d1": 1.25}, "q2": {"d1": 0.5}}


def test_atomic_output_leaves_old_file_on_failure(tmp_path):
    path = write(tmp_path, "out.txt", "old\n")
    with pytest.raises(RuntimeError), atomic_output(path) as out:
        out.write("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf", "Infinity"])
@pytest.mark.parametrize("reader", [read_run, read_run_frame])
def test_non_finite_scores_are_refused_with_file_and_line(tmp_path, reader, score):
    """A NaN ranks arbitrarily (it turned one query's RR@10 from 1.0 into 0.5): both run readers refuse it."""
    path = write(tmp_path, "run.trec", f"q1 Q0 a 1 2.0 t\n\nq1 Q0 b 2 {score} t\nq2 Q0 a 1 1.0 t\n")
    with pytest.raises(InputFormatError, match=r"line 3: expected a finite score") as err:
        reader(path)
    assert str(path) in str(err.value) and err.value.line == 3


def test_fast_run_reader_names_the_line_of_other_bad_lines_and_keeps_strings(tmp_path):
    for content, expected in (("q1 Q0 a 1 2.0 t\nq1 Q0 b 2 1.0\n", "line 2: expected 6 fields"),
                              ("q1 Q0 a 1 2.0 t\nq1 Q0 b 2 1.0 t x\n", "line 2: expected 6 fields"),
                              ("q1 Q0 a 1 high t\n", "line 1: expected a numeric score")):
        with pytest.raises(InputFormatError, match=expected):
            read_run_frame(write(tmp_path, "bad.trec", content))
    frame = read_run_frame(write(tmp_path, "ok.trec", "NA Q0 null 1 2.5 t\n"))
    assert frame.to_dict("records") == [{"qid": "NA", "docid": "null", "score": 2.5}]


def fsync_counter(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    return calls


def test_atomic_output_fsyncs_the_file_before_the_rename(tmp_path, monkeypatch):
    calls = fsync_counter(monkeypatch)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(len(calls)), real_replace(a, b))[1])
    with atomic_output(tmp_path / "out.txt") as out:
        out.write("data\n")
    assert replaced and replaced[0] >= 1  # the file was fsynced before it was renamed in
    assert len(calls) >= 2  # and the directory after (Linux supports it)


def test_atomic_directory_fsyncs_every_file_and_directory(tmp_path, monkeypatch):
    calls = fsync_counter(monkeypatch)
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a").write_text("a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b").write_text("b")
    # two files, two staging directories, then the parent after the rename
    assert len(calls) >= 5 and (tmp_path / "out" / "sub" / "b").read_text() == "b"


def test_atomic_directory_keeps_the_old_output_when_the_new_one_cannot_go_in(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "file").write_text("old")
    real_replace = os.replace

    def failing_replace(source, target):
        if Path(source).name.endswith(".tmp"):  # the rename of the new output into place
            raise OSError("disk gone")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"), atomic_directory(out) as staging:
        (staging / "file").write_text("new")
    assert (out / "file").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # staging and aside copies cleaned up
    monkeypatch.setattr(os, "replace", real_replace)
    with atomic_directory(out) as staging:
        (staging / "file").write_text("new")
    assert (out / "file").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old output removed once replaced


KILLED_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from pipeline.durable import atomic_directory
real = os.replace
def replace(source, target):
    if Path(source).name.endswith(".tmp"):
        os._exit(9)  # as a SIGKILL between the two renames: no clean-up runs
    real(source, target)
os.replace = replace
with atomic_directory(Path(sys.argv[1])) as staging:
    (staging / "file").write_text("new")
"""


def test_atomic_directory_killed_between_renames_leaves_the_old_output_recoverable(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "file").write_text("old")
    result = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(out)], cwd=ROOT, timeout=hang_guard(60))
    assert result.returncode == 9 and not out.exists()
    (aside,) = tmp_path.glob(".out.*.old")
    assert (aside / "file").read_text() == "old"
    # The next atomic_directory for the path puts it back before staging (and a failure then keeps it).
    with pytest.raises(RuntimeError), atomic_directory(out):
        assert (out / "file").read_text() == "old"
        raise RuntimeError("stage failed")
    assert (out / "file").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_verify_npy_checks_size_shape_and_checksum(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.arange(40, dtype=np.float32).reshape(10, 4))
    record = npy_record(path)
    assert record["bytes"] == path.stat().st_size and record["shape"] == [10, 4] and record["dtype"] == "float32"
    verify_npy(path, record)
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(8)  # same size and header, other bytes
    path.write_bytes(bytes(data))
    verify_npy(path, record, checksum=False)  # size and shape agree
    with pytest.raises(InputFormatError, match="blake2b checksum") as err:
        verify_npy(path, record)
    assert str(path) in str(err.value)
    path.write_bytes(bytes(data[:-16]))
    with pytest.raises(InputFormatError, match="truncated") as err:
        verify_npy(path, record, checksum=False)
    assert str(path) in str(err.value)
    np.save(path, np.arange(40, dtype=np.float32).reshape(4, 10))
    with pytest.raises(InputFormatError, match=r"shape \[4, 10\] float32"):
        verify_npy(path, record, checksum=False)
    with pytest.raises(InputFormatError, match="encode it again"):
        verify_npy(path, None)
    assert file_checksum(path) == npy_record(path)["blake2b"]


def test_atomic_directory_leaves_a_sibling_whose_name_extends_its_own_alone(tmp_path):
    """`bm25` cleaning up its stale copies must not take `bm25.d2q`'s staging or aside directories for them."""
    staging_of_other = tmp_path / ".bm25.d2q.k3j9x_2a.tmp"
    aside_of_other = tmp_path / ".bm25.d2q.0123456789ab.old"
    own_stale = tmp_path / ".bm25.zz81kq0b.tmp"
    for directory in (staging_of_other, aside_of_other, own_stale):
        directory.mkdir()
    with atomic_directory(tmp_path / "bm25") as staging:
        (staging / "file").write_text("new")
    assert staging_of_other.is_dir() and aside_of_other.is_dir() and not own_stale.exists()
    assert (tmp_path / "bm25" / "file").read_text() == "new"


def test_a_killed_writers_staging_is_removed_when_the_next_writer_starts(tmp_path):
    """SIGKILL skips every clean-up: the next atomic write of the same path removes what was left, and only
    that path's staging (not that of a sibling output whose name extends it)."""
    left = [tmp_path / ".run.trec.k3j9x.tmp", tmp_path / ".run.trec.a1b2c.tmp"]
    left[0].write_text("half a run")
    left[1].mkdir()
    sibling = tmp_path / ".run.trec.d2q.q8w7e.tmp"
    sibling.write_text("another output's staging")
    with atomic_output(tmp_path / "run.trec") as out:
        out.write("q 0 d 1 1.0 t\n")
    assert not any(path.exists() for path in left) and sibling.exists()
    assert (tmp_path / "run.trec").read_text() == "q 0 d 1 1.0 t\n"


@pytest.mark.parametrize("score_order", [False, True])
def test_in_rank_order_is_trec_eval_order(score_order):
    """Score descending, then docid code descending, per query; both paths (ties only, or a full sort) agree with
    one lexsort, and a run already in that order comes back as it is."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        lengths = rng.integers(0, 12, rng.integers(1, 6))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        docids = np.concatenate([rng.choice(40, n, replace=False) for n in lengths]).astype(np.int64)
        scores = rng.integers(0, 4, offsets[-1]).astype(float)  # many ties
        if score_order:  # score-ordered with ties in any docid order, as Lucene writes them
            for lo, hi in itertools.pairwise(offsets):
                by_score = np.argsort(-scores[lo:hi], kind="stable")
                scores[lo:hi], docids[lo:hi] = scores[lo:hi][by_score], docids[lo:hi][by_score]
        qids = np.array([f"q{i}" for i in range(len(lengths))], dtype=object)
        ranked = RunArrays(qids, offsets, docids, scores).in_rank_order()
        expected = np.lexsort((-docids, -scores, np.repeat(np.arange(len(lengths)), lengths)))
        assert ranked.docids.tolist() == docids[expected].tolist()
        assert ranked.scores.tolist() == scores[expected].tolist()
        assert ranked.in_rank_order() is ranked
