"""Tables 1-5: methods (Table 1), latency per stage (Table 2), distillation conditions (Table 3),
distillation strategies of the neighbouring papers (Table 4), fusion methods beside Eq. 7 (Table 5).

    python -m pipeline.tables --spec results/D/table_spec.json --results results/D --out-dir results

The spec (a JSON file the workflow writes from the config: rule table_spec) lists rows
`{name, run, compare_to, paper: {"split/measure": value}}` and columns `{split, measure}`; a row's metrics
are read from `<results>/metrics/<run>.<split>.tsv` and its latency from
`<results>/runs/<run>.<latency_split>.latency.json`. Adding a method is one row in config. Paper figures are
shown, with our difference from them, when `show_paper` is set.
With `coverage: {splits, depth, p}`, Table 1 adds each split's Judged@depth and RBP(p) + residual from
`<results>/coverage/<run>.<split>.tsv` (pipeline.coverage). With `table5: {methods, pairs}`, Table 5 lists each
{dense, sparse} pair fused by each method (runs `<dense>+<sparse>` for eq7, `<dense>+<sparse>@<method>` otherwise).
The module runs over the 350 lines: the five tables share their readers, tests and formatting, and one stage
writes them all; a module per table would pass the same helpers around.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.evaluate import MEAN_ROW, read_means, read_per_query
from pipeline.formats import InputFormatError
from pipeline.fusion_methods import METHODS

EQ7 = "eq7"  # Table 5's name for the paper's hybrid (pipeline.fusion), the baseline of its tests


def metrics_path(results: Path, run: str, split: str) -> Path:
    return Path(results) / "metrics" / f"{run}.{split}.tsv"


def latency_file(results: Path, run: str, split: str) -> Path:
    return Path(results) / "runs" / f"{run}.{split}.latency.json"


def coverage_path(results: Path, run: str, split: str) -> Path:
    return Path(results) / "coverage" / f"{run}.{split}.tsv"


def read_coverage(path: Path) -> pd.DataFrame:
    """A file written by pipeline.coverage, indexed by qid: its per-query rows and their mean (MEAN_ROW)."""
    # qids stay strings: "NA" or "001" are query ids, not a missing value or a number.
    return pd.read_csv(path, sep="\t", dtype={"qid": str}, keep_default_na=False).set_index("qid")


def _coverage_cells(results: Path, run: str, split: str, depth: int) -> list[str]:
    """Judged@depth and `RBP + residual` of a run's mean row."""
    path = coverage_path(results, run, split)
    means = read_coverage(path).loc[MEAN_ROW]
    if f"judged@{depth}" not in means:
        raise ValueError(f"{path}: no judged@{depth} column (it has {', '.join(means.index)})")
    return [_fmt(means[f"judged@{depth}"]), f"{_fmt(means['rbp'])} + {_fmt(means['rbp_residual'])}"]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def paired_p_value(results: Path, run: str, other: str, split: str, measure: str) -> float:
    """Two-sided paired t-test over the per-query values of two runs on the same judged queries."""
    ours = read_per_query(metrics_path(results, run, split), measure)
    theirs = read_per_query(metrics_path(results, other, split), measure)
    common = sorted(set(ours) & set(theirs))
    a, b = np.array([ours[q] for q in common]), np.array([theirs[q] for q in common])
    if len(common) < 2 or np.allclose(a, b):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def build_table1(spec: dict, results: Path, level: float = 0.05) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table 1 as strings; `*` marks p < level against the row's `compare_to`."""
    columns = [f"{c['split']}/{c['measure']}" for c in spec["columns"]]
    show_paper = bool(spec.get("show_paper"))
    coverage = spec.get("coverage") or {"splits": []}
    covered = [name for split in coverage["splits"]
               for name in (f"{split}/Judged@{coverage['depth']}", f"{split}/RBP(p={coverage['p']:g})")]
    header = ["method", *columns, *covered, "latency_ms", "alpha", "compared_to"]
    if show_paper:
        header += [f"paper {c}" for c in columns] + [f"diff {c}" for c in columns]
    rows = []
    for row in spec["rows"]:
        cells_ours = []
        ours = {}
        for column, name in zip(spec["columns"], columns, strict=True):
            means = read_means(metrics_path(results, row["run"], column["split"]))
            ours[name] = means[column["measure"]]
            marker = ""
            if row.get("compare_to"):
                p = paired_p_value(results, row["run"], row["compare_to"], column["split"], column["measure"])
                marker = "*" if p < level else ""
            cells_ours.append(_fmt(ours[name]) + marker)
        for split in coverage["splits"]:
            cells_ours += _coverage_cells(results, row["run"], split, coverage["depth"])
        timing_path = latency_file(results, row["run"], spec["latency_split"])
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
        cells = [row["name"], *cells_ours, _fmt(timing.get("latency_ms_median"), 2), _fmt(timing.get("alpha"), 2),
                 row.get("compare_to", "")]
        if show_paper:
            paper = row.get("paper", {})
            cells += [_fmt(paper.get(c), 3) for c in columns]
            cells += [_fmt(ours[c] - paper[c]) if c in paper else "" for c in columns]
        rows.append(cells)
    return header, rows


def _write(out_tsv: Path, title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    """A table as TSV and as a Markdown twin beside it."""
    with atomic_output(out_tsv) as out:
        out.write("\t".join(header) + "\n")
        out.writelines("\t".join(cells) + "\n" for cells in rows)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += [line for note in notes if note for line in ("", note)]
    with atomic_output(Path(out_tsv).with_suffix(".md")) as out:
        out.write("\n".join(lines) + "\n")


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def build_table2(spec: dict, results: Path) -> tuple[list[str], list[list[str]]]:
    """Latency per query (median, p95 in ms) of every stage, as measured by the stages themselves, with
    the device and threads each measured on, and the bytes per passage of the index it searches (the
    paper's storage argument: one pooled vector against one vector per token)."""
    split, dense, sparse = spec["split"], spec["dense"], spec["sparse"]
    runs = Path(results) / "runs"
    queries = _json(Path(results) / "queries" / f"{dense}.{split}" / "manifest.json")
    dense_run = _json(runs / f"{dense}.{split}.latency.json")
    sparse_run = _json(runs / f"{sparse}.{split}.latency.json")
    fusion = _json(runs / f"{dense}+{sparse}.{split}.latency.json")
    rerank = _json(runs / f"colbert-{sparse}.{split}.latency.json")
    end_to_end = _json(runs / f"colbert.{split}.latency.json")
    # (stage, median, p95, queries timed, device, threads, precision record, index bytes/passage, how)
    stages = [
        ("query encoder (batch 1)", queries.get("latency_ms_median"), queries.get("latency_ms_p95"),
         queries.get("latency_queries"), queries.get("device"), queries.get("threads"), queries, None, "torch"),
        (f"dense search ({dense_run.get('index', 'flat')}, k={dense_run.get('hits', '?')})",
         dense_run.get("search_ms_median"), dense_run.get("search_ms_p95"), dense_run.get("latency_queries"),
         dense_run.get("device_name"), dense_run.get("threads"), dense_run, dense_run.get("index_bytes_per_passage"),
         "faiss"),
        (f"sparse search ({sparse}, k={sparse_run.get('hits', '?')})", sparse_run.get("latency_ms_median"),
         sparse_run.get("latency_ms_p95"), sparse_run.get("latency_queries"), sparse_run.get("device"),
         sparse_run.get("latency_threads"), {}, None, "Lucene (pyserini)"),
        ("fusion (Eq. 7)", fusion.get("fusion_ms_median"), fusion.get("fusion_ms_p95"),
         fusion.get("latency_queries"), fusion.get("device"), fusion.get("latency_threads"), {}, None, "numpy"),
        (f"ColBERT re-rank of {sparse} (depth {rerank.get('depth', '?')})", rerank.get("rerank_ms_median"),
         rerank.get("rerank_ms_p95"), rerank.get("latency_queries"), rerank.get("device"), rerank.get("threads"),
         rerank, rerank.get("token_index_bytes_per_passage"), "MaxSim over stored token vectors"),
        (f"ColBERT re-rank of {sparse}: {sparse} + re-rank", rerank.get("latency_ms_median"), None, None, None, None,
         {}, None, "sum of medians"),
        (f"ColBERT end to end ({end_to_end.get('index', '?')}, k'={end_to_end.get('depth', '?')}, "
         f"nprobe={end_to_end.get('nprobe')})", end_to_end.get("latency_ms_median"), end_to_end.get("latency_ms_p95"),
         end_to_end.get("latency_queries"), end_to_end.get("device"), end_to_end.get("threads"), end_to_end,
         end_to_end.get("storage_bytes_per_passage"), "token index search + MaxSim over candidates"),
        ("dense retrieval: encoder + search", dense_run.get("latency_ms_median"), None, None, None, None, {}, None,
         "sum of medians"),
        ("hybrid, as the paper: max(sparse, dense) + fusion", fusion.get("latency_ms_median"), None, None, None,
         None, {}, None, "retrievers in parallel"),
        ("hybrid, measured sequentially", fusion.get("sequential_ms_median"), None, None, None, None, {}, None,
         "sparse + dense + fusion"),
    ]
    header = ["stage", "median_ms", "p95_ms", "queries_timed", "device", "threads", "precision", "cpu_capability",
              "index_bytes_per_passage", "how"]
    return header, [[name, _fmt(median, 3), _fmt(p95, 3), _count(timed), device or "", _count(threads),
                     record.get("precision", ""), record.get("cpu_capability", ""), _fmt(size, 1), how]
                    for name, median, p95, timed, device, threads, record, size, how in stages]


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def build_table3(spec: dict, results: Path) -> tuple[list[str], list[list[str]]]:
    """Distillation ablation: each condition's student re-ranking the sparse run, and retrieving alone."""
    split, measure, sparse = spec["split"], spec["measure"], spec["sparse"]
    header = ["condition", "student", f"rerank {sparse} {split}/{measure}", f"full retrieval {split}/{measure}"]
    rows = []
    for condition, run in spec["conditions"].items():
        rerank = read_means(metrics_path(results, f"{run}-rerank-{sparse}", split))[measure]
        full = read_means(metrics_path(results, run, split))[measure]
        rows.append([condition, run, _fmt(rerank), _fmt(full)])
    return header, rows


def _training_cost(results: Path, run: str) -> tuple[float | None, str]:
    """Median wall time of one optimisation step and the precision(s) it ran in, from the student's loss log."""
    path = Path(results) / "training" / f"{run}.losses.csv"
    if not path.exists():
        return None, ""
    log = pd.read_csv(path)
    seconds = log.get("seconds")
    median = None if seconds is None or seconds.dropna().empty else float(seconds.median())
    precisions = "/".join(dict.fromkeys(log["precision"].dropna())) if "precision" in log else ""
    return median, precisions


def build_table4(spec: dict, columns: list[dict], latency_split: str, dataset: str, results: Path,
                 level: float = 0.05) -> tuple[list[str], list[list[str]]]:
    """Distillation strategies: Table 1's columns, seconds per training step, latency per query (end to end, and
    the query encoder's alone for dense models), a paired t-test of each strategy against `baseline` on the first
    column (`*` marks p < level in every column), and the figures its paper published on `dataset` (`published`)."""
    names = [f"{c['split']}/{c['measure']}" for c in columns]
    baseline = spec["baseline"]
    published = {label: entry for label, entry in (spec.get("published") or {}).items() if entry["dataset"] == dataset}
    header = ["strategy", "student", *names, "s_per_step", "precision", "latency_ms", "query_encoder_ms",
              f"p vs {baseline} ({names[0]})", "published"]
    rows = []
    for label, run in spec["strategies"].items():
        cells = []
        for column in columns:
            value = read_means(metrics_path(results, run, column["split"]))[column["measure"]]
            p = 1.0 if run == baseline else paired_p_value(results, run, baseline, column["split"],
                                                            column["measure"])
            cells.append(_fmt(value) + ("*" if p < level else ""))
        first = "" if run == baseline else _fmt(paired_p_value(results, run, baseline, columns[0]["split"],
                                                                columns[0]["measure"]))
        seconds, precision = _training_cost(results, run)
        latency = _json(latency_file(results, run, latency_split)).get("latency_ms_median")
        encoder = _json(Path(results) / "queries" / f"{run}.{latency_split}" / "manifest.json")
        # Only figures of this data set and this table's columns: like with like.
        figures = {column: value for column, value in (published.get(label) or {}).get("figures", {}).items()
                   if column in names}
        rows.append([label, run, *cells, _fmt(seconds, 3), precision, _fmt(latency, 2),
                     _fmt(encoder.get("latency_ms_median"), 2), first,
                     "; ".join(f"{value:.3f} ({column})" for column, value in figures.items())])
    return header, rows


def fusion_run(dense: str, sparse: str, method: str) -> str:
    """The run a fusion method makes of a pair: Eq. 7's keeps the hybrid's plain name."""
    return f"{dense}+{sparse}" if method == EQ7 else f"{dense}+{sparse}@{method}"


def _fusion_parameter(results: Path, dense: str, sparse: str, method: str, latency_split: str) -> str:
    """`name=value` of the parameter a fusion ran with: Eq. 7's alpha as Table 1 reads it, rrf's and rbp's as
    `pipeline.fusion_methods tune` chose it; empty for methods without one."""
    if method == EQ7:
        alpha = _json(latency_file(results, fusion_run(dense, sparse, method), latency_split)).get("alpha")
        return "" if alpha is None else f"alpha={_fmt(alpha, 2)}"
    if METHODS[method].parameter is None:
        return ""
    choice = json.loads((Path(results) / "fusion" / f"{dense}+{sparse}.{method}.json").read_text())
    return f"{choice['parameter']}={choice['value']:g}"


def build_table5(spec: dict, columns: list[dict], latency_split: str, results: Path,
                 level: float = 0.05) -> tuple[list[str], list[list[str]]]:
    """Fusion methods: one row per (pair, method) with Table 1's columns; each method is tested against Eq. 7 of
    its pair (paired t-test), the p-values of a column Holm-corrected together (`*`: adjusted p < level)."""
    unknown = [method for method in spec["methods"] if method != EQ7 and method not in METHODS]
    if unknown:
        raise ValueError(f"Table 5: unknown fusion method {unknown[0]!r} (known: {EQ7}, {', '.join(METHODS)})")
    names = [f"{c['split']}/{c['measure']}" for c in columns]
    header = ["hybrid", "method", "parameter", *names, f"p_holm vs {EQ7} ({names[0]})"]
    rows, tests = [], []  # tests: (row index, run, its pair's Eq. 7 run)
    for pair in spec["pairs"]:
        dense, sparse = pair["dense"], pair["sparse"]
        for method in spec["methods"]:
            run = fusion_run(dense, sparse, method)
            if method != EQ7:
                tests.append((len(rows), run, fusion_run(dense, sparse, EQ7)))
            means = [read_means(metrics_path(results, run, c["split"]))[c["measure"]] for c in columns]
            rows.append([f"{dense}+{sparse}", method, _fusion_parameter(results, dense, sparse, method, latency_split),
                         *map(_fmt, means), ""])
    for position, column in enumerate(columns):
        if not tests:
            break
        raw = [paired_p_value(results, run, eq7, column["split"], column["measure"]) for _, run, eq7 in tests]
        adjusted = multipletests(raw, alpha=level, method="holm")[1]
        for (index, _, _), p in zip(tests, adjusted, strict=True):
            rows[index][3 + position] += "*" if p < level else ""
            if position == 0:
                rows[index][-1] = _fmt(float(p))
    return header, rows


# What each method scores, for Table 5's note (pipeline.fusion and pipeline.fusion_methods say it in full).
FUSION_NOTES = {
    EQ7: "eq7: alpha * sparse + dense score (the paper's Eq. 7)",
    "rrf": "rrf: sum of 1 / (k + rank)",
    "rbp": "rbp: sum of (1 - p) * p^(rank - 1)",
    "combsum": "combsum: sum of per-query min-max normalised scores",
    "combmnz": "combmnz: sum of per-query min-max normalised scores times the number of runs holding the document",
    "borda": "borda: sum of Borda points",
}


def write_tables(spec: dict, results: Path, out_dir: Path) -> None:
    """Tables 1-5 (TSV and Markdown) into `out_dir`; Tables 2-5 when the spec asks for them."""
    header, rows = build_table1(spec, results)
    notes = ["`*`: paired two-sided t-test over queries against the run in `compared_to`, p < 0.05. "
             "Latency: median ms/query on this machine (hybrids: max(sparse, dense) + fusion).", spec.get("note", "")]
    if (spec.get("coverage") or {}).get("splits"):  # the config may resolve the splits to none
        depth, p = spec["coverage"]["depth"], spec["coverage"]["p"]
        notes.append(f"Judged@{depth}: the fraction of each query's top {depth} with a judgement of any grade, "
                     f"averaged over queries. RBP(p={p:g}) `value + residual`: rank-biased precision over binary "
                     "relevance, and its residual, what the documents of unknown relevance could add to it at most "
                     "(the unjudged ones retrieved, and everything past the end of a short list: Moffat & Zobel).")
    if spec.get("show_paper"):
        notes += [f"{row['name']}: reference figures from {row['reference']}." for row in spec["rows"]
                  if row.get("reference")]
    _write(Path(out_dir) / "table1.tsv", f"Table 1 - {spec.get('dataset', '')}", header, rows, notes)
    if spec.get("table2"):
        header, rows = build_table2(spec["table2"], results)
        _write(Path(out_dir) / "table2_latency.tsv", "Table 2 - latency per query", header, rows,
               ["Medians and 95th percentiles over single queries (the first `queries_timed` of the split), "
                "measured by each stage on the device named, in the precision named (cpu_capability: the vector "
                "ISA the stage's CPU kernels ran: PyTorch's for encoders, Faiss's build for search). "
                "index_bytes_per_passage: the pooled Faiss index against ColBERT's stored token vectors "
                "(re-ranking) and those plus its token IVF-PQ index (end to end)."])
    if spec.get("table3"):
        header, rows = build_table3(spec["table3"], results)
        _write(Path(out_dir) / "table3_ablation.tsv", "Table 3 - distillation conditions", header, rows,
               ["none = hard labels only (PoolAvg); triplet = KL over each query's own pair; inbatch = KL over all "
                "2B in-batch passages (TCT-ColBERT)."])
    if spec.get("table4"):
        header, rows = build_table4(spec["table4"], spec["columns"], spec["latency_split"], spec["dataset"], results)
        published = {label: entry for label, entry in (spec["table4"].get("published") or {}).items()
                     if entry["dataset"] == spec["dataset"]}
        columns = {f"{c['split']}/{c['measure']}" for c in spec["columns"]}
        _write(Path(out_dir) / "table4_distillation.tsv", "Table 4 - distillation strategies", header, rows,
               [f"`*`: paired two-sided t-test over queries against {spec['table4']['baseline']}, p < 0.05. "
                "s_per_step: median seconds per optimisation step on this machine, teacher included, in the "
                f"precision named. latency_ms: median per query on {spec['latency_split']} as in Table 1; "
                "query_encoder_ms: the query encoder's alone (batch 1), for dense models.",
                *[f"{label}: published figures from {entry['source']}." for label, entry in published.items()
                  if label in spec["table4"]["strategies"] and set(entry["figures"]) & set(columns)]])
    if spec.get("table5"):
        fusions = spec["table5"]
        header, rows = build_table5(fusions, spec["columns"], spec["latency_split"], results)
        others = [method for method in fusions["methods"] if method != EQ7]
        notes = ["; ".join(FUSION_NOTES[method] for method in dict.fromkeys([EQ7, *others])) + "."]
        if others:
            notes = [f"`*`: paired two-sided t-test over queries against {EQ7} of the same hybrid, Holm-Bonferroni "
                     f"adjusted p < 0.05; each column's tests form one family ({len(fusions['pairs']) * len(others)} "
                     f"comparisons: every hybrid x every method but {EQ7}). p_holm: the adjusted p of the first "
                     "column.", notes[0] + f" All but {EQ7} score as trectools' fusion module does (CombSUM/MNZ and "
                     "Borda as its combos), checked against it."]
        _write(Path(out_dir) / "table5_fusion.tsv", "Table 5 - fusion methods", header, rows, notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, required=True, help="JSON file of the table specification")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise InputFormatError(args.spec, None, "a JSON table specification", str(err)) from None
    write_tables(spec, args.results, args.out_dir)


if __name__ == "__main__":
    run_stage(main)
