"""Table 1: one row per method, evaluated columns, latency, and the paper's figures beside ours.

    python -m pipeline.tables --spec '<json>' --results results/D --out results/table1.tsv

The spec (built from config by the workflow) lists rows `{name, run, paper: {"split/measure": value}}`
and columns `{split, measure}`; a row's metrics are read from `<results>/metrics/<run>.<split>.tsv`
and its latency from `<results>/runs/<run>.<latency_split>.latency.json`. Adding a method is one
row in config. Paper figures are shown, with our difference from them, when `show_paper` is set.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipeline.evaluate import read_means
from pipeline.io import atomic_output


def metrics_path(results: Path, run: str, split: str) -> Path:
    return Path(results) / "metrics" / f"{run}.{split}.tsv"


def latency_file(results: Path, run: str, split: str) -> Path:
    return Path(results) / "runs" / f"{run}.{split}.latency.json"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def build_table1(spec: dict, results: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table 1 as strings."""
    columns = [f"{c['split']}/{c['measure']}" for c in spec["columns"]]
    show_paper = bool(spec.get("show_paper"))
    header = ["method", *columns, "latency_ms"]
    if show_paper:
        header += [f"paper {c}" for c in columns] + [f"diff {c}" for c in columns]
    rows = []
    for row in spec["rows"]:
        ours = {}
        for column in spec["columns"]:
            means = read_means(metrics_path(results, row["run"], column["split"]))
            ours[f"{column['split']}/{column['measure']}"] = means[column["measure"]]
        timing_path = latency_file(results, row["run"], spec["latency_split"])
        latency = json.loads(timing_path.read_text()).get("latency_ms_median") if timing_path.exists() else None
        cells = [row["name"], *(_fmt(ours[c]) for c in columns), _fmt(latency, 2)]
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
