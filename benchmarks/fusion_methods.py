"""The fusion methods and judgement coverage: ours (pipeline.fusion_methods, pipeline.coverage: array code) against
trectools 0.0.50 (tests/trectools_oracle.py) on the same input, in one run.

Two 1000-deep runs for 6,980 queries (MS MARCO dev.small's size) with half of the candidates in both lists, the
synthetic runs of benchmarks/fusion.py, and one judged document per query. Timed, from the runs read into frames:
- the five fuses (rrf, rbp, combsum, combmnz, borda, each at its default) to every query's top 1000: ours in one
  job's pass; trectools as the pipeline called it before (64 queries a call, each method on its own);
- both tuning sweeps (rrf's 10 values of k, rbp's 9 of p) over the first 6,000 queries, RR@10 through
  pipeline.evaluate: ours in one pass; trectools projected as grid values x its per-query fuse time;
- coverage (Judged@10, RBP(0.8) and its residual) of the RRF hybrid.
trectools runs on the first --oracle-queries queries (fuses) and --oracle-coverage-queries (coverage), projected
linearly to all: it fuses query by query, and its coverage is linear in the run's rows. On those queries the
script also checks that both rank alike and reports the largest score difference. Scores are float64 throughout
(numpy, pandas, trectools): no PyTorch precision is involved.

Our figures, with the peak RSS of our part and the size of one fused run file, also go to --json
(benchmarks/fusion_methods.json), from which benchmarks/resource_plan.py projects the stages at paper scale.

    python benchmarks/fusion_methods.py [--queries 6980] [--depth 1000] [--tuning-queries 6000]
        [--oracle-queries 100] [--oracle-coverage-queries 1000] [--json benchmarks/fusion_methods.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import precision
from pipeline.coverage import coverage
from pipeline.formats import write_qrels, write_run
from pipeline.fusion_methods import METHODS, encoded_inputs, fuse_inputs, sweep
from pipeline.run_arrays import RunArrays, read_run_frame, write_run_arrays
from pipeline.timing import cpu_name

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from fusion import synthetic_runs  # benchmarks/ holds scripts, not a package

from tests import trectools_oracle

ORACLE_BLOCK = 64  # queries per trectools call, as pipeline.fusion_methods gave them before it became array code


def as_frame(run: RunArrays, vocabulary: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"qid": np.repeat(run.qids, np.diff(run.offsets)), "docid": vocabulary[run.docids],
                         "score": run.scores})


def timed(work):
    tick = time.perf_counter()
    result = work()
    return time.perf_counter() - tick, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=6980)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--tuning-queries", type=int, default=6000)
    parser.add_argument("--oracle-queries", type=int, default=100, help="queries trectools fuses (then projected)")
    parser.add_argument("--oracle-coverage-queries", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("fusion_methods.json"))
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores, PyTorch CPU capability {precision.cpu_capability()}, float64 "
          f"scores (no PyTorch precision involved); {args.queries} queries x two {args.depth}-deep runs, "
          f"tuning on {args.tuning_queries}", flush=True)
    sparse, dense = synthetic_runs(args.queries, args.depth)
    work = Path(tempfile.mkdtemp(prefix="fusion-methods-bench."))
    write_run(work / "sparse.trec", {q: list(hits.items()) for q, hits in sparse.items()}, "s")
    write_run(work / "dense.trec", {q: list(hits.items()) for q, hits in dense.items()}, "d")
    rng = np.random.default_rng(1)
    qrels = {q: {str(rng.choice(list(hits))): 1} for q, hits in sparse.items()}
    write_qrels(work / "qrels.txt", qrels)
    del sparse, dense
    read_seconds, frames = timed(lambda: (read_run_frame(work / "sparse.trec"), read_run_frame(work / "dense.trec")))
    tuned = list(qrels)[:args.tuning_queries]
    tune_frames = tuple(frame[frame["qid"].isin(tuned)] for frame in frames)
    tune_qrels = {q: qrels[q] for q in tuned}

    # Ours.
    settings = [(method, None) for method in METHODS]
    fuse_seconds, (inputs, fused) = timed(lambda: (lambda inputs: (inputs, fuse_inputs(inputs, settings)))(
        encoded_inputs(*frames)))
    grids = {method: spec.grid for method, spec in METHODS.items() if spec.parameter}
    sweep_seconds, curves = timed(lambda: sweep(encoded_inputs(*tune_frames), tune_qrels, "RR@10", grids))
    hybrid = as_frame(fused[0], inputs.vocabulary)
    coverage_seconds, _ = timed(lambda: coverage(hybrid, qrels))
    write_seconds, _ = timed(lambda: write_run_arrays(work / "rrf.trec", fused[0], inputs.vocabulary, "rrf",
                                                      exact=True))
    ours = {"cpu": cpu_name(), "cpu_capability": precision.cpu_capability(), "queries": args.queries,
            "depth": args.depth, "tuning_queries": args.tuning_queries, "read_two_runs_seconds": round(read_seconds, 2),
            "five_fuses_seconds": round(fuse_seconds, 2), "sweeps_seconds": round(sweep_seconds, 2),
            "coverage_seconds": round(coverage_seconds, 2), "write_one_run_seconds": round(write_seconds, 2),
            "fused_run_bytes": (work / "rrf.trec").stat().st_size,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    args.json.write_text(json.dumps(ours, indent=2) + "\n")
    shutil.rmtree(work)
    print(f"ours: five fuses {fuse_seconds:.1f} s, sweeps {sweep_seconds:.1f} s, coverage {coverage_seconds:.1f} s; "
          f"reading both runs {read_seconds:.1f} s, writing one fused run {write_seconds:.1f} s", flush=True)

    # trectools on the first queries, projected.
    oracle_qids = list(qrels)[:args.oracle_queries]
    by_query = [dict(tuple(frame.groupby("qid", sort=False))) for frame in frames]
    per_query, largest, same_order = {}, 0.0, True
    for method_index, method in enumerate(METHODS):
        seconds, parts = 0.0, []
        for start in range(0, len(oracle_qids), ORACLE_BLOCK):
            block = oracle_qids[start:start + ORACLE_BLOCK]
            sides = [pd.concat([side[q] for q in block]) for side in by_query]
            elapsed, part = timed(lambda sides=sides, method=method: trectools_oracle.fuse(*sides, method))
            seconds += elapsed
            parts.append(part)
        per_query[method] = seconds / len(oracle_qids)
        theirs = pd.concat(parts).groupby("qid", sort=False).head(args.depth)
        ours = as_frame(fused[method_index], inputs.vocabulary)
        ours = ours[ours["qid"].isin(oracle_qids)]
        ours = ours.set_index("qid").loc[oracle_qids].reset_index()
        theirs = theirs.set_index("qid").loc[oracle_qids].reset_index()
        same_order &= ours["docid"].tolist() == theirs["docid"].tolist()
        largest = max(largest, float(np.abs(ours["score"].to_numpy() - theirs["score"].to_numpy()).max()))
        print(f"trectools {method}: {1000 * per_query[method]:.1f} ms/query", flush=True)
    coverage_qids = list(qrels)[:args.oracle_coverage_queries]
    oracle_coverage, _ = timed(lambda: trectools_oracle.coverage(
        hybrid[hybrid["qid"].isin(coverage_qids)], {q: qrels[q] for q in coverage_qids}, 10, 0.8, 1000))
    oracle_coverage *= args.queries / len(coverage_qids)

    theirs_fuse = sum(per_query.values()) * args.queries
    theirs_sweep = sum(len(grid) * per_query[method] for method, grid in grids.items()) * args.tuning_queries
    ours_total = fuse_seconds + sweep_seconds + coverage_seconds
    theirs_total = theirs_fuse + theirs_sweep + oracle_coverage
    print(f"\nOn the {len(oracle_qids)} queries trectools fused: rankings {'identical' if same_order else 'DIFFER'}, "
          f"largest |score difference| {largest:.3g}")
    print(f"trectools projected from {len(oracle_qids)} queries (fuses, sweeps) and {len(coverage_qids)} (coverage)\n")
    print("| step | ours, s | trectools, s | ratio |")
    print("|---|---|---|---|")
    for step, ours_s, theirs_s in (
            ("the five fuses (rrf, rbp, combsum, combmnz, borda), from the frames", fuse_seconds, theirs_fuse),
            (f"both sweeps (19 values) on {args.tuning_queries} queries, RR@10", sweep_seconds, theirs_sweep),
            ("coverage of the RRF hybrid (Judged@10, RBP(0.8), residual)", coverage_seconds, oracle_coverage),
            ("**all three**", ours_total, theirs_total)):
        print(f"| {step} | {ours_s:.1f} | {theirs_s:.0f} | {theirs_s / ours_s:.0f}x |")
    print(f"\nours, all three: {ours_total / 60:.2f} min (goal: at most 2 min); trectools: {theirs_total / 60:.1f} min")
    print(f"best RR@10 on the tuning queries: rrf {max(curves['rrf']):.4f}, rbp {max(curves['rbp']):.4f}")


if __name__ == "__main__":
    main()
