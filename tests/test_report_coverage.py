"""The report's per-query figure marks queries whose top k the qrels judge poorly (pipeline.coverage's files)."""

import logging

import matplotlib.pyplot as plt
import pytest

from pipeline.report import _scatter_figure, main

QUERIES = [str(q) for q in range(6)]


@pytest.fixture
def results(tmp_path):
    """Per-query RR@10 of runs x and y on dev; y's coverage judges queries 0-2 below 70% of the top 10, x's (where
    written) query 5; the mean row (0.1) is no query."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "coverage").mkdir()
    for run, values in {"x": [1, 0.5, 0.5, 1, 0.2, 0], "y": [1, 1, 0.5, 0.5, 0.2, 1]}.items():
        (tmp_path / "metrics" / f"{run}.dev.tsv").write_text(
            "qid\tRR@10\n" + "".join(f"{q}\t{v:.6f}\n" for q, v in zip(QUERIES, values, strict=True))
            + f"all\t{sum(values) / len(values):.6f}\n")
    y_judged = [0.1, 0.5, 0.6, 0.7, 0.9, 1.0]  # 0.7 itself is not below the threshold
    (tmp_path / "coverage" / "y.dev.tsv").write_text(
        "qid\tjudged@10\trbp\trbp_residual\n" + "".join(f"{q}\t{j:.6f}\t0.100000\t0.200000\n"
                                                        for q, j in zip(QUERIES, y_judged, strict=True))
        + "all\t0.100000\t0.100000\t0.200000\n")
    return tmp_path


def legend(fig) -> list[str]:
    texts = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    return texts


def test_scatter_marks_poorly_judged_queries_of_either_run(results):
    assert legend(_scatter_figure(results, "x", "y", "dev", "RR@10")) == [
        "other queries", "top 10 < 70% judged (3 queries)"]
    (results / "coverage" / "x.dev.tsv").write_text(
        "qid\tjudged@10\trbp\trbp_residual\n5\t0.300000\t0.0\t0.5\n0\t0.800000\t0.2\t0.1\nall\t0.55\t0.1\t0.3\n")
    assert legend(_scatter_figure(results, "x", "y", "dev", "RR@10"))[1] == "top 10 < 70% judged (4 queries)"
    assert legend(_scatter_figure(results, "x", "y", "dev", "RR@10", 0.55))[1] == "top 10 < 55% judged (3 queries)"


def test_scatter_without_coverage_has_no_legend(results):
    (results / "coverage" / "y.dev.tsv").unlink()
    fig = _scatter_figure(results, "x", "y", "dev", "RR@10")
    assert fig.axes[0].get_legend() is None
    plt.close(fig)


def test_report_threshold_option_and_table5(results, tmp_path, caplog):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "table5_fusion.tsv").write_text("hybrid\tmethod\tparameter\tdev/RR@10\tp_holm vs eq7 (dev/RR@10)\n"
                                              "d+s\trrf\tk=60\t0.5000*\t0.0100\n")
    with caplog.at_level(logging.INFO, logger="pipeline.report"):
        main(["--results", str(results), "--tables", str(tables), "--out", str(tmp_path / "report.html"),
              "--scatter", "x", "y", "--split", "dev", "--judged-threshold", "0.55"])
    assert "2 of 6 queries marked, top 10 < 55% judged" in caplog.text
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Table 5: fusion methods</h2>" in page and "0.5000*" in page
