"""report: one self-contained HTML page with the three tables and the figures behind them.

    python -m pipeline.report --results results/D --tables results --out results/report.html \
        --scatter bm25 tct_inbatch --split dev --measure RR@10

Figures (also saved as PNGs beside the report): training losses of teacher and students, the
alpha curves of every hybrid, the latency of each stage, and per-query effectiveness of two runs
against each other; queries whose top k is less than `--judged-threshold` judged in either run (by
`<results>/coverage/<run>.<split>.tsv`, pipeline.coverage, where it exists) are marked in that last figure.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas as pd

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.evaluate import MEAN_ROW, read_per_query
from pipeline.tables import coverage_path, read_coverage

log = logging.getLogger(__name__)
JUDGED_THRESHOLD = 0.7  # below this judged fraction of the top k, a query's measure says little about the run


def _loss_figure(training: Path):
    curves = sorted(training.glob("*.losses.csv"))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for path in curves:
        frame = pd.read_csv(path)
        window = max(1, len(frame) // 20)
        ax.plot(frame["step"], frame["loss"].rolling(window, min_periods=1).mean(), label=path.name.split(".")[0])
    ax.set(xlabel="step", ylabel="loss (moving average)", title="Training losses", yscale="log")
    ax.legend()
    return fig


def _alpha_figure(fusion: Path):
    curves = sorted(fusion.glob("*.alpha.tsv"))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for path in curves:
        frame = pd.read_csv(path, sep="\t")
        metric = frame.columns[1]
        line, = ax.plot(frame["alpha"], frame[metric], label=path.name.removesuffix(".alpha.tsv"))
        best = frame[metric].idxmax()
        ax.scatter([frame["alpha"][best]], [frame[metric][best]], color=line.get_color(), zorder=3)
    ax.set(xlabel="alpha (weight of the sparse score, Eq. 7)", ylabel=f"{metric} on the tuning queries",
           title="Alpha tuning")
    ax.legend()
    return fig


def _latency_figure(table2: Path):
    if not table2.exists():
        return None
    frame = pd.read_csv(table2, sep="\t").dropna(subset=["median_ms"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(frame["stage"], frame["median_ms"], color="#4c72b0", label="median")
    timed = frame.dropna(subset=["p95_ms"])
    ax.scatter(timed["p95_ms"], timed["stage"], marker="|", s=200, color="black", label="95th percentile")
    ax.invert_yaxis()
    ax.set(xlabel="ms per query", title="Latency per stage")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def poorly_judged(results: Path, runs: tuple[str, ...], split: str, threshold: float) -> tuple[set[str], str]:
    """Queries whose top k is less than `threshold` judged in any of `runs` with a coverage file, and the judged@k
    column that says so ("" when no run has a coverage file)."""
    flagged, column = set(), ""
    for run in runs:
        path = coverage_path(results, run, split)
        if path.exists():
            frame = read_coverage(path).drop(MEAN_ROW)
            column = next(name for name in frame.columns if name.startswith("judged@"))
            flagged |= set(frame.index[frame[column] < threshold])
    return flagged, column


def _scatter_figure(results: Path, x_run: str, y_run: str, split: str, measure: str,
                    judged_threshold: float = JUDGED_THRESHOLD):
    x_path, y_path = (results / "metrics" / f"{run}.{split}.tsv" for run in (x_run, y_run))
    if not (x_path.exists() and y_path.exists()):
        return None
    x, y = read_per_query(x_path, measure), read_per_query(y_path, measure)
    common = sorted(set(x) & set(y))
    flagged, judged_column = poorly_judged(results, (x_run, y_run), split, judged_threshold)
    marked = [q for q in common if q in flagged]
    fig, ax = plt.subplots(figsize=(5, 5))
    groups = [([q for q in common if q not in flagged], "o", "#4c72b0", "other queries" if judged_column else None)]
    if judged_column:
        depth = judged_column.removeprefix("judged@")
        groups.append((marked, "D", "#dd8452",
                       f"top {depth} < {judged_threshold:.0%} judged ({len(marked)} queries)"))
        log.info("per query: %d of %d queries marked, top %s < %.0f%% judged", len(marked), len(common), depth,
                 100 * judged_threshold)
    for queries, marker, colour, label in groups:
        # Reciprocal ranks take few values: equal points are drawn once, their size and label the query count.
        counts = Counter((x[q], y[q]) for q in queries)
        ax.scatter([px for px, _ in counts], [py for _, py in counts], s=[12 + 6 * n for n in counts.values()],
                   alpha=0.4, marker=marker, color=colour, label=label)
        for (px, py), n in counts.items():
            if n > 1:
                ax.annotate(str(n), (px, py), fontsize=7, ha="center", va="center")
    if judged_column:
        ax.legend(loc="upper left", fontsize=8)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
    wins = sum(y[q] > x[q] for q in common)
    losses = sum(y[q] < x[q] for q in common)
    ax.set(xlabel=f"{x_run} {measure}", ylabel=f"{y_run} {measure}",
           title=f"Per query ({split}): {y_run} better on {wins}, worse on {losses} of {len(common)}")
    return fig


def build_report(results: Path, tables: Path, out: Path, scatter: tuple[str, str], split: str,
                 measure: str, judged_threshold: float = JUDGED_THRESHOLD) -> list[Path]:
    """Write the HTML report and its PNG figures; returns the figure paths."""
    figures_dir = out.parent / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = {"training_losses": _loss_figure(results / "training"), "alpha_curves": _alpha_figure(results / "fusion"),
               "latency": _latency_figure(tables / "table2_latency.tsv"),
               "per_query": _scatter_figure(results, *scatter, split, measure, judged_threshold)}
    parts = ["<!doctype html><meta charset='utf-8'><title>TCT-ColBERT pipeline report</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style>",
             f"<h1>TCT-ColBERT pipeline: {html.escape(results.name)}</h1>"]
    titled = [(tables / f"{name}.tsv", title) for name, title in (
        ("table1", "Table 1: effectiveness and latency"), ("table2_latency", "Table 2: latency"),
        ("table3_ablation", "Table 3: distillation conditions"),
        ("table4_distillation", "Table 4: distillation strategies"), ("table5_fusion", "Table 5: fusion methods"))]
    titled += [(path, f"Approximate indexes against flat search: {path.stem}")
               for path in sorted((results / "indexes").glob("*.tsv"))]
    for path, title in titled:
        if path.exists():
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            parts += [f"<h2>{title}</h2>", frame.to_html(index=False, escape=True)]
    written = []
    for name, fig in figures.items():
        if fig is None:
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        with atomic_output(figures_dir / f"{name}.png", "wb") as png:
            png.write(buffer.getvalue())
        written.append(figures_dir / f"{name}.png")
        encoded = base64.b64encode(buffer.getvalue()).decode()
        parts += [f"<h2>{name.replace('_', ' ').capitalize()}</h2>",
                  f"<img alt='{name}' src='data:image/png;base64,{encoded}'>"]
    with atomic_output(out) as handle:
        handle.write("\n".join(parts) + "\n")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="results/<dataset>")
    parser.add_argument("--tables", type=Path, required=True, help="directory holding table1.tsv etc.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scatter", nargs=2, default=("bm25", "tct_inbatch"), metavar=("X_RUN", "Y_RUN"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--measure", default="RR@10")
    parser.add_argument("--judged-threshold", type=float, default=JUDGED_THRESHOLD,
                        help="mark per-query points whose top k is less judged than this fraction in either run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    figures = build_report(args.results, args.tables, args.out, tuple(args.scatter), args.split, args.measure,
                           args.judged_threshold)
    log.info("report %s with %d figures", args.out, len(figures))


if __name__ == "__main__":
    run_stage(main)
