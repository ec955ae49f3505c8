"""The Margin-MSE authors' released teacher scores: downloaded, md5-verified and checked line by line (a local
HTTP server serves a small file in their format under the release's name)."""

import hashlib

import pytest

from pipeline.data import teacher_scores
from pipeline.download import ChecksumError
from pipeline.formats import InputFormatError, read_teacher_scores
from tests.http_fixture import serve

LINES = "12.5\t3.25\t1185869\t0\t2606498\n-1.5\t-4.0\t1185868\t16\t1540722\n"


def publish(folder, content: str, monkeypatch) -> None:
    """`content` as the ensemble's file, with its md5 as the one the release table pins."""
    name, _ = teacher_scores.RELEASES["bert_cat_ensemble"]
    (folder / name).write_text(content)
    monkeypatch.setitem(teacher_scores.RELEASES, "bert_cat_ensemble",
                        (name, hashlib.md5(content.encode()).hexdigest()))


def test_release_is_downloaded_verified_and_checked(tmp_path, monkeypatch):
    (tmp_path / "zenodo").mkdir()
    publish(tmp_path / "zenodo", LINES, monkeypatch)
    out = tmp_path / "margin-mse" / "bert_cat_ensemble.tsv"
    with serve(tmp_path / "zenodo") as (base_url, _):
        teacher_scores.main(["--release", "bert_cat_ensemble", "--out", str(out), "--base-url", base_url])
    assert read_teacher_scores(out) == {("1185869", "0", "2606498"): (12.5, 3.25),
                                        ("1185868", "16", "1540722"): (-1.5, -4.0)}
    # The publisher's file changed: its md5 no longer matches the pinned one.
    name, _ = teacher_scores.RELEASES["bert_cat_ensemble"]
    (tmp_path / "zenodo" / name).write_text(LINES + LINES)
    with serve(tmp_path / "zenodo") as (base_url, _), pytest.raises(ChecksumError):
        teacher_scores.fetch_teacher_scores("bert_cat_ensemble", tmp_path / "again.tsv", base_url, progress=False)


def test_a_damaged_line_stops_with_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "zenodo").mkdir()
    publish(tmp_path / "zenodo", LINES + "12.5\t3.25\t1185869\t0\n", monkeypatch)
    with serve(tmp_path / "zenodo") as (base_url, _), \
            pytest.raises(InputFormatError, match=r"scores.tsv, line 3: expected 'pos_score neg_score qid"):
        teacher_scores.fetch_teacher_scores("bert_cat_ensemble", tmp_path / "scores.tsv", base_url, progress=False)
    with pytest.raises(ValueError, match="unknown teacher score release 'tas_b'"):
        teacher_scores.fetch_teacher_scores("tas_b", tmp_path / "x.tsv")
