"""trectools' fusion methods (pipeline.fusion_methods) against our Eq. 7 fusion (pipeline.fusion) on the same input.

Two 1000-deep runs for 6,980 queries (MS MARCO dev.small's size) with half of the candidates in both lists, the
synthetic runs of benchmarks/fusion.py. Each method is timed from the runs read into frames (read_run_frame) to the
fused top 1000 of every query, as is Eq. 7 (encode_runs + fuse_arrays; fuse_arrays alone is the figure of
benchmarks/fusion.py); an untimed call on one query first loads trectools' lazy imports (scikit-learn, seconds).
Then each tuning sweep (tune_method: fusing at every grid value and RR@10 through pipeline.evaluate, reading
excluded) against tune_alpha's 201-value sweep on the same queries: all of them, or the first --tuning-queries,
projected linearly to all (each sweep fuses and scores query blocks independently). Last, pipeline.coverage on
the Eq. 7 run. Scores are float64 throughout (numpy, pandas, trectools): no PyTorch precision is involved.

    python benchmarks/fusion_methods.py [--queries 6980] [--depth 1000] [--block 64] [--methods rrf ...]
        [--tuning-queries N | --no-tuning]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import precision
from pipeline.coverage import coverage
from pipeline.fusion import fuse_arrays
from pipeline.fusion_methods import METHODS, fuse_inputs, fused_frame, prepare, tune_method
from pipeline.io import write_qrels, write_run
from pipeline.run_arrays import RunArrays, encode_runs, read_run_frame
from pipeline.timing import cpu_name
from pipeline.tune_alpha import tune_alpha

sys.path.insert(0, str(Path(__file__).parent))
from fusion import best_of, synthetic_runs  # benchmarks/ holds scripts, not a package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=6980)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--block", type=int, default=64, help="queries per trectools call")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--tuning-queries", type=int, help="tune on the first N queries (default: all of them)")
    parser.add_argument("--no-tuning", action="store_true", help="time fusing only")
    args = parser.parse_args()
    tuning_queries = min(args.tuning_queries or args.queries, args.queries)
    scale = args.queries / tuning_queries
    print(f"{cpu_name()}, PyTorch CPU capability {precision.cpu_capability()}, float64 scores (no PyTorch "
          f"precision involved); {args.queries} queries x two {args.depth}-deep runs, trectools given {args.block} "
          f"queries a call" + ("" if args.no_tuning else f", tuning on {tuning_queries} queries"), flush=True)
    sparse, dense = synthetic_runs(args.queries, args.depth)
    work = Path(tempfile.mkdtemp(prefix="fusion-methods-bench."))
    tuned = list(sparse)[:tuning_queries]
    for name, run in (("sparse", sparse), ("dense", dense)):
        write_run(work / f"{name}.trec", {q: list(hits.items()) for q, hits in run.items()}, name[0])
        write_run(work / f"{name}.tune.trec", {q: list(run[q].items()) for q in tuned}, name[0])
    rng = np.random.default_rng(1)
    qrels = {q: {rng.choice(list(hits)): 1} for q, hits in sparse.items()}
    write_qrels(work / "qrels.txt", qrels)
    write_qrels(work / "qrels.tune.txt", {q: qrels[q] for q in tuned})
    tune_files = (work / "sparse.tune.trec", work / "dense.tune.trec", work / "qrels.tune.txt")
    frames = [read_run_frame(work / name) for name in ("sparse.trec", "dense.trec")]
    del sparse, dense

    def eq7() -> tuple[tuple[RunArrays, RunArrays, np.ndarray], RunArrays]:
        encoded = encode_runs(*frames)
        return encoded, fuse_arrays(*encoded, 0.1)

    eq7_ms, ((sparse_arrays, dense_arrays, vocabulary), fused) = best_of(3, eq7)
    eq7_seconds = eq7_ms / 1000
    fuse_ms, _ = best_of(3, lambda: fuse_arrays(sparse_arrays, dense_arrays, vocabulary, 0.1))
    print(f"Eq. 7: {eq7_seconds:.2f} s from the frames, {fuse_ms / 1000:.2f} s of it fusing the encoded runs",
          flush=True)
    alpha = None if args.no_tuning else tune_alpha(*tune_files, work / "alpha.tsv",
                                                   work / "alpha.json")["sweep_seconds"]
    rows = [("Eq. 7 (pipeline.fusion), alpha 0.1", eq7_seconds, "201 alphas", alpha)]
    one_query = [frame[frame["qid"] == frame["qid"].iloc[0]] for frame in frames]
    fuse_inputs(prepare(*one_query, "rrf"), "rrf")  # untimed: trectools' lazy imports
    for method in args.methods:
        spec = METHODS[method]
        tick = time.perf_counter()
        fuse_inputs(prepare(*frames, method), method, block=args.block)
        seconds = time.perf_counter() - tick
        label = f"{method} ({spec.parameter} {spec.default:g})" if spec.parameter else method
        tuning = None
        if spec.parameter and not args.no_tuning:
            tuning = tune_method(*tune_files, method, work / "curve.tsv", work / "choice.json")["sweep_seconds"]
        rows.append((label, seconds, f"{len(spec.grid)} values of {spec.parameter}", tuning))
        print(f"{label}: {seconds:.1f} s" + (f", grid {tuning:.1f} s" if tuning else ""), flush=True)
    tick = time.perf_counter()
    coverage(fused_frame(fused, vocabulary), work / "qrels.txt")
    coverage_seconds = time.perf_counter() - tick
    shutil.rmtree(work)

    projected = f", projected x{scale:.2f} to {args.queries} queries" if scale > 1 else ""
    print(f"\n| method | fuse from the frames, s | ratio to Eq. 7 from the frames | ratio to Eq. 7's fuse_arrays alone "
          f"| tuning sweep on {tuning_queries} queries, s{projected} | ratio to the alpha sweep |")
    print("|---|---|---|---|---|---|")
    for label, seconds, grid, sweep in rows:
        tuned_text = "- | -"
        if sweep and alpha:
            tuned_text = (f"{sweep:.1f}" + (f" (projected {sweep * scale:.0f})" if scale > 1 else "")
                          + f", {grid} | {sweep / alpha:.1f}x")
        ratios = f"{seconds / eq7_seconds:.1f}x | {seconds / (fuse_ms / 1000):.0f}x"
        print(f"| {label} | {seconds:.2f} | {ratios} | {tuned_text} |")
    total = sum(seconds for _, seconds, _, _ in rows[1:]) + scale * sum(sweep or 0 for *_, sweep in rows[1:])
    print(f"\npipeline.coverage (judged@10, RBP(0.8) and residual) of the Eq. 7 run, {args.queries} queries judged: "
          f"{coverage_seconds:.1f} s")
    print(f"the fusion-methods stage (every fuse above, every tuning sweep{' projected' if scale > 1 else ''}, "
          f"coverage): {(total + coverage_seconds) / 60:.1f} min")


if __name__ == "__main__":
    main()
