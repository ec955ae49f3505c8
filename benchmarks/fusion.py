"""Fusion (Eq. 7): ours (vectorised over all queries) vs pyserini's HybridSearcher per query.

Two 1000-deep runs for 6,980 queries (MS MARCO dev.small's size) with half of the candidates in
both lists. Each tool starts from the parsed runs in its own form (ours: the arrays our reader makes;
pyserini: its searchers' hit objects) and ends with ranked fused lists; reading and writing files
are timed separately, for our whole stage. Then the alpha sweep (201 values) over 6,000 queries.

    python benchmarks/fusion.py [--queries 6980] [--depth 1000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.formats import write_qrels, write_run
from pipeline.fusion import fuse_arrays, fuse_runs
from pipeline.run_arrays import encode_runs, read_run_frame
from pipeline.sparse.jvm import import_pyserini
from pipeline.tune_alpha import tune_alpha


def synthetic_runs(n_queries: int, depth: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    sparse, dense = {}, {}
    for q in range(n_queries):
        docs = rng.choice(8_000_000, size=int(depth * 1.5), replace=False).astype(str)
        sparse[str(q)] = dict(zip(docs[:depth], np.sort(rng.gamma(9, 2, depth))[::-1].round(4).tolist(), strict=True))
        dense[str(q)] = dict(zip(docs[depth // 2:depth // 2 + depth], np.sort(rng.normal(70, 3, depth))[::-1]
                                 .round(5).tolist(), strict=True))
    return sparse, dense


def best_of(repeats: int, work: Callable):
    """The fastest of `repeats` runs in ms, and the result."""
    timings = []
    for _ in range(repeats):
        tick = time.perf_counter()
        result = work()
        timings.append(1000 * (time.perf_counter() - tick))
    return min(timings), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=6980)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--sweep-queries", type=int, default=6000)
    args = parser.parse_args()
    sparse, dense = synthetic_runs(args.queries, args.depth)
    work = Path(tempfile.mkdtemp(prefix="fusion-bench."))
    write_run(work / "sparse.trec", {q: list(hits.items()) for q, hits in sparse.items()}, "s")
    write_run(work / "dense.trec", {q: list(hits.items()) for q, hits in dense.items()}, "d")

    # Each side gets the parsed runs in its own form, untimed: our readers' arrays, pyserini's hit objects.
    sparse_arrays, dense_arrays, vocabulary = encode_runs(read_run_frame(work / "sparse.trec"),
                                                          read_run_frame(work / "dense.trec"))
    ours_ms, ours = best_of(3, lambda: fuse_arrays(sparse_arrays, dense_arrays, vocabulary, 0.1, k=1000))
    ours_ms /= args.queries
    hybrid = import_pyserini("pyserini.search.hybrid")
    hit = import_pyserini("pyserini.search.faiss").DenseSearchResult
    as_hits = {q: ([hit(d, s) for d, s in dense[q].items()], [hit(d, s) for d, s in sparse[q].items()])
               for q in sparse}
    theirs_ms, theirs = best_of(3, lambda: {q: hybrid.HybridSearcher._hybrid_results(d, s, 0.1, 1000)
                                            for q, (d, s) in as_hits.items()})
    theirs_ms /= args.queries
    same = all(np.allclose(ours.scores[ours.offsets[row]:ours.offsets[row + 1]], [h.score for h in theirs[qid]])
               for row, qid in enumerate(ours.qids[:200]))
    # The whole stage: read both files, fuse, write the run, then one query at a time for the latency.
    tick = time.perf_counter()
    record = fuse_runs(work / "sparse.trec", work / "dense.trec", work / "fused.trec", 0.1)
    stage_ms = 1000 * (time.perf_counter() - tick) / args.queries

    subset = {str(q) for q in range(args.sweep_queries)}
    write_run(work / "s.trec", {q: list(sparse[q].items()) for q in sorted(subset)}, "s")
    write_run(work / "d.trec", {q: list(dense[q].items()) for q in sorted(subset)}, "d")
    rng = np.random.default_rng(1)
    write_qrels(work / "qrels.txt", {q: {rng.choice(list(sparse[q])): 1} for q in sorted(subset)})
    tick = time.perf_counter()
    choice = tune_alpha(work / "s.trec", work / "d.trec", work / "qrels.txt", work / "curve.tsv", work / "alpha.json",
                        0.0, 2.0, 0.01)
    sweep_total = time.perf_counter() - tick
    shutil.rmtree(work)

    print(f"\n{args.queries} queries x two {args.depth}-deep runs; ranked scores equal pyserini's on 200 queries: "
          f"{same}\n")
    print("| fusion (Eq. 7), fastest of 3 | ms/query | speed-up vs pyserini |")
    print("|---|---|---|")
    print(f"| ours: fuse_arrays, all queries at once | {ours_ms:.4f} | {theirs_ms / ours_ms:.1f}x |")
    print(f"| pyserini HybridSearcher._hybrid_results, per query | {theirs_ms:.4f} | 1.0x |")
    print(f"| ours, one query at a time (fuse_runs latency, median / p95) | {record['fusion_ms_median']:.4f} / "
          f"{record['fusion_ms_p95']:.4f} | {theirs_ms / record['fusion_ms_median']:.1f}x |")
    print(f"| ours, whole fuse stage: read both files, fuse, write, time 200 queries alone | {stage_ms:.4f} | |")
    print(f"\nalpha sweep, 201 values x {args.sweep_queries} queries: {choice['sweep_seconds']:.1f} s sweep, "
          f"{sweep_total:.1f} s including reading and aligning the runs")


if __name__ == "__main__":
    main()
