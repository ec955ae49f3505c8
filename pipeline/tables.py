"""Table 1: one row per method, evaluated columns, latency, and the paper's figures beside ours.

    python -m pipeline.tables --spec '<json>' --results results/D --out results/table1.tsv

The spec (built from config by the workflow) lists rows `{name, run, compare_to, paper: {"split/measure": value}}`
and columns `{split, measure}`; a row's metrics are read from `<results>/metrics/<run>.<split>.tsv`
and its latency from `<results>/runs/<run>.<latency_split>.latency.json`. Adding a method is one
row in config. Paper figures are shown, with our difference from them, when `show_paper` is set.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from pipeline.evaluate import read_means, read_per_query
from pipeline.io import atomic_output


def metrics_path(results: Path, run: str, split: str) -> Path:
    return Path(results) / "metrics" / f"{run}.{split}.tsv"


def latency_file(results: Path, run: str, split: str) -> Path:
    return Path(results) / "runs" / f"{run}.{split}.latency.json"


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
    header = ["method", *columns, "latency_ms", "alpha", "compared_to"]
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


def write_table1(spec: dict, results: Path, out_tsv: Path) -> None:
    """Write Table 1 as TSV and as a Markdown twin (`.md` beside it)."""
    header, rows = build_table1(spec, results)
    with atomic_output(out_tsv) as out:
        out.write("\t".join(header) + "\n")
        for cells in rows:
            out.write("\t".join(cells) + "\n")
    title = f"Table 1 - {spec.get('dataset', '')}".rstrip(" -")
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    lines += ["", "`*`: paired two-sided t-test over queries against the run in `compared_to`, p < 0.05. "
              "Latency: median ms/query on this machine (hybrids: max(sparse, dense) + fusion)."]
    if spec.get("note"):
        lines += ["", spec["note"]]
    with atomic_output(Path(out_tsv).with_suffix(".md")) as out:
        out.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="JSON table specification")
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    write_table1(json.loads(args.spec), args.results, args.out)


if __name__ == "__main__":
    main()
