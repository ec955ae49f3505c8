"""Evaluate a TREC run with trec_eval's own code (pytrec_eval), per query and mean.

    python -m pipeline.evaluate --run results/D/runs/bm25.dev.trec --qrels resources/D/qrels.dev.txt \
        --measures RR@10 R@1000 --out results/D/metrics/bm25.dev.tsv

Measures use ir_measures' names (RR@10, nDCG@10, R@1000, R(rel=2)@1000, P@10, AP) and trec_eval's
semantics: documents ranked by score with ties broken by docid in reverse order, nDCG with linear
gains over the graded judgements, and the mean taken over every query in the qrels (a query
missing from the run counts 0, as `trec_eval -c`). RR@k is trec_eval's `recip_rank` under
`-M k`: the reciprocal rank of the first relevant document if it is within the top k.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import ir_measures
import pytrec_eval

from pipeline.cli import run_stage
from pipeline.durable import atomic_output
from pipeline.formats import Qrels, Run, read_qrels, read_run

log = logging.getLogger(__name__)

MEAN_ROW = "all"  # trec_eval's name for the aggregate row


def _trec_eval_name(measure: ir_measures.Measure) -> tuple[str, int]:
    """(pytrec_eval measure, relevance level) for one parsed measure."""
    params = measure.params
    rel = int(params.get("rel") or 1)
    cutoff = params.get("cutoff")
    if measure.NAME == "RR":
        return "recip_rank", rel
    if cutoff is None and measure.NAME in {"nDCG", "R", "P"}:
        raise ValueError(f"{measure} needs a cutoff, e.g. {measure.NAME}@10")
    names = {"nDCG": f"ndcg_cut.{cutoff}", "R": f"recall.{cutoff}", "P": f"P.{cutoff}",
             "AP": "map" if cutoff is None else f"map_cut.{cutoff}"}
    if measure.NAME not in names:
        raise ValueError(f"unsupported measure {measure}; use RR, nDCG, R, P or AP")
    if measure.NAME == "nDCG" and "rel" in params and params["rel"] is not None:
        raise ValueError(f"{measure}: nDCG uses graded gains, a relevance level does not apply")
    return names[measure.NAME], rel


def score_run(run: Run, qrels: Qrels, measures: Sequence[str]) -> dict[str, dict[str, float]]:
    """{qid: {measure: value}} for every query in `qrels`, plus the mean under MEAN_ROW."""
    parsed = [ir_measures.parse_measure(name) for name in measures]
    by_level: dict[int, set[str]] = {}
    for measure in parsed:
        trec_name, rel = _trec_eval_name(measure)
        by_level.setdefault(rel, set()).add(trec_name)
    raw = {rel: pytrec_eval.RelevanceEvaluator(qrels, names, relevance_level=rel).evaluate(run)
           for rel, names in by_level.items()}

    table: dict[str, dict[str, float]] = {}
    for qid in qrels:
        row = {}
        for name, measure in zip(measures, parsed, strict=True):
            trec_name, rel = _trec_eval_name(measure)
            value = raw[rel].get(qid, {}).get(trec_name.replace(".", "_"), 0.0)
            cutoff = measure.params.get("cutoff")
            if measure.NAME == "RR" and cutoff is not None and value < 1.0 / cutoff - 1e-12:
                value = 0.0
            row[name] = value
        table[qid] = row
    table[MEAN_ROW] = {name: sum(r[name] for r in table.values()) / max(len(qrels), 1) for name in measures}
    return table


def evaluate_run(run_path: Path, qrels_path: Path, measures: Sequence[str], out_path: Path) -> dict[str, float]:
    """Score a run file; write per-query values and the `all` row as TSV; return the means."""
    run, qrels = read_run(run_path), read_qrels(qrels_path)
    unjudged = len(set(run) - set(qrels))
    if unjudged:
        log.warning("%s: %d queries have no judgements in %s and are ignored", run_path, unjudged, qrels_path)
    table = score_run(run, qrels, measures)
    with atomic_output(out_path) as out:
        out.write("qid\t" + "\t".join(measures) + "\n")
        for qid, row in table.items():
            out.write(qid + "\t" + "\t".join(f"{row[m]:.6f}" for m in measures) + "\n")
    return table[MEAN_ROW]


def read_means(metrics_path: Path) -> dict[str, float]:
    """The `all` row of a metrics file written by `evaluate_run`."""
    with open(metrics_path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")[1:]
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if fields[0] == MEAN_ROW:
                return dict(zip(header, map(float, fields[1:]), strict=True))
    raise ValueError(f"{metrics_path}: no '{MEAN_ROW}' row")


def read_per_query(metrics_path: Path, measure: str) -> dict[str, float]:
    """One measure per query (without the `all` row) from a metrics file written by `evaluate_run`."""
    with open(metrics_path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        column = header.index(measure)
        rows = (line.rstrip("\n").split("\t") for line in handle)
        return {fields[0]: float(fields[column]) for fields in rows if fields[0] != MEAN_ROW}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--measures", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    means = evaluate_run(args.run, args.qrels, args.measures, args.out)
    log.info("%s: %s", args.run, "  ".join(f"{k} {v:.4f}" for k, v in means.items()))


if __name__ == "__main__":
    run_stage(main)
