from pathlib import Path

import pytest

from pipeline.io import (
    InputFormatError,
    atomic_output,
    read_collection,
    read_qrels,
    read_queries,
    read_run,
    read_triples,
    write_run,
)


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
