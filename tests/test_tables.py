import json

import numpy as np
import pytest
from scipy import stats

from pipeline import coverage
from pipeline.evaluate import evaluate_run
from pipeline.formats import write_qrels, write_run
from pipeline.tables import build_table1, build_table2, build_table3, build_table4, build_table5, write_tables

SPEC = {
    "dataset": "toy",
    "rows": [{"name": "BM25", "run": "bm25", "paper": {"dev/RR@10": 0.184}},
             {"name": "Other", "run": "other"}],
    "columns": [{"split": "dev", "measure": "RR@10"}, {"split": "dl", "measure": "nDCG@10"}],
    "latency_split": "dev",
    "show_paper": True,
    "note": "toy numbers",
}


@pytest.fixture
def results(tmp_path):
    qrels = {"1": {"a": 1}, "2": {"b": 1}}
    write_qrels(tmp_path / "qrels.txt", qrels)
    for run, ranking in {"bm25": ["a", "b"], "other": ["b", "a"]}.items():
        write_run(tmp_path / "runs" / f"{run}.dev.trec", {q: [(d, 2.0 - i) for i, d in enumerate(ranking)]
                                                          for q in qrels}, run)
        for split in ("dev", "dl"):
            evaluate_run(tmp_path / "runs" / f"{run}.dev.trec", tmp_path / "qrels.txt", ["RR@10", "nDCG@10"],
                         tmp_path / "metrics" / f"{run}.{split}.tsv")
    (tmp_path / "runs" / "bm25.dev.latency.json").write_text(json.dumps({"latency_ms_median": 1.234}))
    return tmp_path


def test_table1_rows_columns_paper_and_difference(results):
    header, rows = build_table1(SPEC, results)
    assert header[:4] == ["method", "dev/RR@10", "dl/nDCG@10", "latency_ms"]
    assert "paper dev/RR@10" in header and "diff dev/RR@10" in header
    bm25 = dict(zip(header, rows[0], strict=True))
    assert bm25["dev/RR@10"] == "0.7500" and bm25["latency_ms"] == "1.23"
    assert bm25["paper dev/RR@10"] == "0.184" and bm25["diff dev/RR@10"] == "0.5660"
    other = dict(zip(header, rows[1], strict=True))
    assert other["latency_ms"] == "" and other["paper dev/RR@10"] == ""


def test_table1_files(results):
    write_tables({**SPEC, "show_paper": False}, results, results)
    lines = (results / "table1.tsv").read_text().splitlines()
    assert lines[0] == "method\tdev/RR@10\tdl/nDCG@10\tlatency_ms\talpha\tcompared_to" and len(lines) == 3
    markdown = (results / "table1.md").read_text()
    assert "| BM25 | 0.7500 |" in markdown and "toy numbers" in markdown


def judged_runs(directory, rankings: dict) -> None:
    """30 queries with passage "a" relevant; each run ranks per `rankings[run](query number)`; dev metrics."""
    qrels = {str(q): {"a": 1} for q in range(30)}
    write_qrels(directory / "qrels.txt", qrels)
    for run, ranking in rankings.items():
        write_run(directory / f"{run}.trec", {q: [(d, 2.0 - i) for i, d in enumerate(ranking(int(q)))]
                                              for q in qrels}, run)
        evaluate_run(directory / f"{run}.trec", directory / "qrels.txt", ["RR@10"],
                     directory / "metrics" / f"{run}.dev.tsv")


def test_significance_marker_against_compare_to(results, tmp_path):
    # "good" finds the relevant passage first every time, "bad" only a third of the time.
    judged_runs(tmp_path, {"good": lambda q: ["a", "b"], "bad": lambda q: ["a", "b"] if q % 3 == 0 else ["b", "a"]})
    spec = {"rows": [{"name": "Good", "run": "good", "compare_to": "bad"}, {"name": "Bad", "run": "bad",
                                                                            "compare_to": "bad"}],
            "columns": [{"split": "dev", "measure": "RR@10"}], "latency_split": "dev"}
    header, rows = build_table1(spec, tmp_path)
    assert rows[0][1] == "1.0000*" and rows[1][1] == "0.6667" and rows[0][header.index("compared_to")] == "bad"


def test_missing_metrics_fail_loudly(results):
    with pytest.raises(FileNotFoundError):
        build_table1({**SPEC, "rows": [{"name": "X", "run": "missing"}]}, results)


def test_table3_reads_rerank_and_full_runs(results):
    for run in ("bm25-rerank-x", "other-rerank-x"):
        (results / "metrics" / f"{run}.dev.tsv").write_text("qid\tRR@10\nall\t0.250000\n")
    header, rows = build_table3({"split": "dev", "measure": "RR@10", "sparse": "x",
                                 "conditions": {"none": "bm25", "inbatch": "other"}}, results)
    assert header[2] == "rerank x dev/RR@10"
    assert rows == [["none", "bm25", "0.2500", "0.7500"], ["inbatch", "other", "0.2500", "0.7500"]]


def test_table4_strategies_cost_per_step_latency_paired_test_and_published_figures(tmp_path):
    judged_runs(tmp_path, {"base": lambda q: ["b", "a"] if q % 3 else ["a", "b"], "better": lambda q: ["a", "b"],
                           "same": lambda q: ["b", "a"] if q % 3 else ["a", "b"]})
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "better.losses.csv").write_text(
        "step,loss,lr,grad_norm,seconds,precision,cpu_capability\n1,2.0,1e-5,1.0,1.5,fp32,AVX2\n"
        "2,1.0,1e-5,1.0,0.5,fp32,AVX2\n3,0.5,1e-5,1.0,0.7,bf16,AVX512\n")  # resumed on another machine
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "better.dev.latency.json").write_text(json.dumps({"latency_ms_median": 12.345}))
    (tmp_path / "queries" / "better.dev").mkdir(parents=True)
    (tmp_path / "queries" / "better.dev" / "manifest.json").write_text(json.dumps({"latency_ms_median": 3.5}))
    spec = {"baseline": "base", "strategies": {"KL": "base", "Margin-MSE": "better", "Same": "same"},
            "published": {"Margin-MSE": {"dataset": "msmarco-passage", "source": "x",
                                         "figures": {"dev/RR@10": 0.323, "dl19/nDCG@10": 0.697}},
                          "KL": {"dataset": "scifact", "figures": {"dev/RR@10": 0.9}, "source": "y"}}}
    # dl19 is no column here, nor scifact the data set: those figures are left out (like with like only)
    header, rows = build_table4(spec, [{"split": "dev", "measure": "RR@10"}], "dev", "msmarco-passage", tmp_path)
    assert header == ["strategy", "student", "dev/RR@10", "s_per_step", "precision", "latency_ms", "query_encoder_ms",
                      "p vs base (dev/RR@10)", "published"]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert table["KL"]["dev/RR@10"] == "0.6667" and table["KL"]["p vs base (dev/RR@10)"] == ""
    assert table["Margin-MSE"]["dev/RR@10"] == "1.0000*" and table["Margin-MSE"]["s_per_step"] == "0.700"
    assert table["Margin-MSE"]["precision"] == "fp32/bf16" and table["KL"]["precision"] == ""
    assert float(table["Margin-MSE"]["p vs base (dev/RR@10)"]) < 0.05
    assert table["Same"]["p vs base (dev/RR@10)"] == "1.0000" and table["Same"]["s_per_step"] == ""
    assert (table["Margin-MSE"]["latency_ms"], table["Margin-MSE"]["query_encoder_ms"]) == ("12.35", "3.50")
    assert table["KL"]["latency_ms"] == table["KL"]["query_encoder_ms"] == table["KL"]["published"] == ""
    assert table["Margin-MSE"]["published"] == "0.323 (dev/RR@10)"


def test_table2_stages_devices_and_index_sizes(tmp_path):
    runs, encoded = tmp_path / "runs", tmp_path / "queries" / "tct.dev"
    runs.mkdir()
    encoded.mkdir(parents=True)
    (encoded / "manifest.json").write_text(json.dumps(
        {"latency_ms_median": 3.0, "latency_ms_p95": 4.0, "latency_queries": 50, "device": "GPU X", "threads": 8,
         "precision": "bf16", "cpu_capability": "AVX512"}))
    latencies = {
        "tct": {"index": "flat", "hits": 1000, "search_ms_median": 10.0, "search_ms_p95": 12.5, "latency_queries": 50,
                "device_name": "GPU X", "threads": 8, "index_bytes_per_passage": 1536.0, "latency_ms_median": 13.0,
                "precision": "fp16", "cpu_capability": "AVX512"},
        "bm25": {"hits": 1000, "latency_ms_median": 20.0, "latency_ms_p95": 30.0, "latency_queries": 50,
                 "device": "CPU Y", "latency_threads": 1},
        "tct+bm25": {"fusion_ms_median": 0.5, "fusion_ms_p95": 0.75, "latency_queries": 50, "device": "CPU Y",
                     "latency_threads": 1, "latency_ms_median": 20.5, "sequential_ms_median": 33.5},
        "colbert-bm25": {"depth": 100, "rerank_ms_median": 40.0, "rerank_ms_p95": 45.0, "latency_queries": 50,
                         "device": "GPU X", "threads": 8, "token_index_bytes_per_passage": 20480.0,
                         "latency_ms_median": 60.0},
        "colbert": {"index": "ivfpq", "depth": 1000, "nprobe": 10, "latency_ms_median": 80.0, "latency_ms_p95": 90.0,
                    "latency_queries": 50, "device": "CPU Y", "threads": 2, "storage_bytes_per_passage": 20520.5,
                    "precision": "fp32", "cpu_capability": "AVX2"},
    }
    for run, record in latencies.items():
        (runs / f"{run}.dev.latency.json").write_text(json.dumps(record))
    header, rows = build_table2({"split": "dev", "dense": "tct", "sparse": "bm25"}, tmp_path)
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert table["query encoder (batch 1)"] == {
        "stage": "query encoder (batch 1)", "median_ms": "3.000", "p95_ms": "4.000", "queries_timed": "50",
        "device": "GPU X", "threads": "8", "precision": "bf16", "cpu_capability": "AVX512",
        "index_bytes_per_passage": "", "how": "torch"}
    assert table["dense search (flat, k=1000)"]["precision"] == "fp16"
    assert table["sparse search (bm25, k=1000)"]["precision"] == ""
    assert table["dense search (flat, k=1000)"]["index_bytes_per_passage"] == "1536.0"
    assert table["sparse search (bm25, k=1000)"]["threads"] == "1"
    assert table["fusion (Eq. 7)"]["p95_ms"] == "0.750"
    assert table["ColBERT re-rank of bm25 (depth 100)"]["index_bytes_per_passage"] == "20480.0"
    assert table["ColBERT re-rank of bm25: bm25 + re-rank"]["median_ms"] == "60.000"
    end_to_end = table["ColBERT end to end (ivfpq, k'=1000, nprobe=10)"]
    assert (end_to_end["median_ms"], end_to_end["index_bytes_per_passage"], end_to_end["cpu_capability"]) == (
        "80.000", "20520.5", "AVX2")
    assert table["hybrid, as the paper: max(sparse, dense) + fusion"]["median_ms"] == "20.500"
    assert table["hybrid, measured sequentially"]["median_ms"] == "33.500"


def test_table1_coverage_columns(results):
    # bm25's file as pipeline.coverage writes it (hand-computed: each query's top 2 has one judged document, its
    # relevant one at rank 1 (RBP 0.2) or 2 (0.16), the unjudged one at the other rank, and nothing known past
    # rank 2: the residual gains 0.8 ** 2 = 0.64); "other"'s written by hand,
    # with a query row unlike the mean and RBP unlike its residual.
    coverage.main(["--run", str(results / "runs" / "bm25.dev.trec"), "--qrels", str(results / "qrels.txt"),
                   "--out", str(results / "coverage" / "bm25.dev.tsv")])
    (results / "coverage" / "other.dev.tsv").write_text(
        "qid\tjudged@10\trbp\trbp_residual\n1\t0.100000\t0.900000\t0.000000\nall\t0.423077\t0.423100\t0.102000\n")
    spec = {**SPEC, "coverage": {"splits": ["dev"], "depth": 10, "p": 0.8}}
    header, rows = build_table1(spec, results)
    assert header[:6] == ["method", "dev/RR@10", "dl/nDCG@10", "dev/Judged@10", "dev/RBP(p=0.8)", "latency_ms"]
    assert "paper dev/Judged@10" not in header and "diff dev/RBP(p=0.8)" not in header
    bm25, other = (dict(zip(header, row, strict=True)) for row in rows)
    assert (bm25["dev/Judged@10"], bm25["dev/RBP(p=0.8)"]) == ("0.5000", "0.1800 + 0.8200")
    assert (other["dev/Judged@10"], other["dev/RBP(p=0.8)"]) == ("0.4231", "0.4231 + 0.1020")
    assert bm25["paper dev/RR@10"] == "0.184" and bm25["diff dev/RR@10"] == "0.5660"
    write_tables(spec, results, results)
    assert "Judged@10: the fraction of each query's top 10 with a judgement of any grade" in (
        results / "table1.md").read_text()
    assert build_table1({**SPEC, "coverage": None}, results)[0] == build_table1(SPEC, results)[0]
    write_tables({**spec, "coverage": {**spec["coverage"], "splits": []}}, results, results)
    assert "Judged" not in (results / "table1.md").read_text()


def test_table1_coverage_missing_fails_loudly(results):
    with pytest.raises(FileNotFoundError):
        build_table1({**SPEC, "coverage": {"splits": ["dev"], "depth": 10, "p": 0.8}}, results)


# Per query (30 queries, "a" relevant): RR@10 is 1 where a run ranks "a" first, else 0.5.
EQ7_FIRST = {0, 3, 6, 9, 12, 15, 18, 21, 24, 27}
FUSED_FIRST = {  # raw p against eq7: ~2e-8, ~0.012, ~0.043 (< 0.05, but not after Holm), 1
    "d1+s@rrf": set(range(30)), "d1+s@combsum": EQ7_FIRST | set(range(9)),
    "d2+s@rrf": EQ7_FIRST | set(range(6)), "d2+s@combsum": EQ7_FIRST}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, by its definition: the i-th smallest p times (m - i), made monotone."""
    order = np.argsort(p_values)
    adjusted, running = [0.0] * len(p_values), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - i) * p_values[index]))
        adjusted[index] = running
    return adjusted


@pytest.fixture
def fused(tmp_path):
    first = {run: EQ7_FIRST for run in ("d1+s", "d2+s")} | FUSED_FIRST
    judged_runs(tmp_path, {run: (lambda q, hits=hits: ["a", "b"] if q in hits else ["b", "a"])
                           for run, hits in first.items()})
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "d1+s.dev.latency.json").write_text(json.dumps({"alpha": 0.12}))
    (tmp_path / "fusion").mkdir()
    for pair, k in (("d1+s", 60), ("d2+s", 20)):
        (tmp_path / "fusion" / f"{pair}.rrf.json").write_text(json.dumps({"method": "rrf", "parameter": "k",
                                                                          "value": k}))
    return tmp_path


FUSION_SPEC = {"methods": ["eq7", "rrf", "combsum"], "pairs": [{"dense": "d1", "sparse": "s"},
                                                               {"dense": "d2", "sparse": "s"}]}


def test_table5_rows_parameters_and_holm_correction(fused):
    header, rows = build_table5(FUSION_SPEC, [{"split": "dev", "measure": "RR@10"}], "dev", fused)
    assert header == ["hybrid", "method", "parameter", "dev/RR@10", "p_holm vs eq7 (dev/RR@10)"]
    table = {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in rows}
    assert list(table) == [("d1+s", "eq7"), ("d1+s", "rrf"), ("d1+s", "combsum"),
                           ("d2+s", "eq7"), ("d2+s", "rrf"), ("d2+s", "combsum")]
    assert [table[key]["parameter"] for key in table] == ["alpha=0.12", "k=60", "", "", "k=20", ""]
    assert table["d1+s", "eq7"]["dev/RR@10"] == "0.6667" and table["d1+s", "eq7"]["p_holm vs eq7 (dev/RR@10)"] == ""
    # One family of the four comparisons, adjusted by hand from the per-query values.
    eq7 = np.where(np.isin(np.arange(30), list(EQ7_FIRST)), 1.0, 0.5)
    raw = [1.0 if first == EQ7_FIRST else stats.ttest_rel(np.where(np.isin(np.arange(30), list(first)), 1.0, 0.5),
                                                          eq7).pvalue for first in FUSED_FIRST.values()]
    assert 0.025 < raw[2] < 0.05  # significant alone, not among four
    for run, p in zip(FUSED_FIRST, holm(raw), strict=True):
        pair, method = run.split("@")
        row = table[pair, method]
        assert row["p_holm vs eq7 (dev/RR@10)"] == f"{p:.4f}"
        assert row["dev/RR@10"].endswith("*") == (p < 0.05)
    assert [table[key]["dev/RR@10"] for key in table] == ["0.6667", "1.0000*", "0.7667*", "0.6667", "0.7333",
                                                          "0.6667"]


def test_table5_files_and_note(fused):
    spec = {**SPEC, "rows": [], "columns": [{"split": "dev", "measure": "RR@10"}], "table5": FUSION_SPEC}
    write_tables(spec, fused, fused)
    lines = (fused / "table5_fusion.tsv").read_text().splitlines()
    assert lines[0] == "hybrid\tmethod\tparameter\tdev/RR@10\tp_holm vs eq7 (dev/RR@10)" and len(lines) == 7
    markdown = (fused / "table5_fusion.md").read_text()
    assert markdown.startswith("# Table 5 - fusion methods")
    assert "Holm-Bonferroni" in markdown and "(4 comparisons" in markdown and "combsum: sum of" in markdown


def test_table5_eq7_only(fused):
    spec = {**SPEC, "rows": [], "columns": [{"split": "dev", "measure": "RR@10"}],
            "table5": {**FUSION_SPEC, "methods": ["eq7"]}}
    write_tables(spec, fused, fused)
    lines = (fused / "table5_fusion.tsv").read_text().splitlines()
    assert lines[1:] == ["d1+s\teq7\talpha=0.12\t0.6667\t", "d2+s\teq7\t\t0.6667\t"]
    assert "Holm" not in (fused / "table5_fusion.md").read_text()


def test_table5_unknown_method(fused):
    with pytest.raises(ValueError, match="unknown fusion method 'combmax'"):
        build_table5({**FUSION_SPEC, "methods": ["eq7", "combmax"]}, [{"split": "dev", "measure": "RR@10"}], "dev",
                     fused)
