"""End-to-end ColBERT retrieval (token IVF-PQ candidates -> exact MaxSim) against exact MaxSim over everything.

A teacher's token shards (encoded into the work directory unless --tokens names existing ones) are
indexed exactly (`flat`: the whole collection is every query's candidate set) and with IVF-PQ at the
default partitions and at each `--partitions` given; every index is searched with each `--nprobe`.
Prints, per setting: latency per query (median, p95), candidates per query, bytes per passage of the
token shards and of the index, the top-10 overlap with the exact ranking and, with --qrels, MRR@10
and R@1000.

    python benchmarks/colbert_retrieve.py --model resources/synthetic/models/teacher \
        --collection resources/synthetic/collection.tsv --queries resources/synthetic/queries.dev.tsv \
        --qrels resources/synthetic/qrels.dev.txt [--partitions 64 256] [--nprobe 10 32] [--threads 2]

Measured 2026-12-03 on 2 shared cores (AMD EPYC, AVX512, no GPU; 2 threads, OMP_WAIT_POLICY=PASSIVE):
the demo's trained teacher (MiniLM, 128 dims) over ../shared/data/msmarco-dl-mini (30,091 real MS MARCO
passages, 1,968,710 tokens kept, float16 shards), the 43 TREC DL 2019 queries, k' = 1000, hits = 1000
(`--tokens ... --partitions 1024 --nprobe 10 32 --latency-queries 43`). MRR@10 counts rel >= 1.

| index | P | nprobe | ms/query (p95) | candidates | token / index bytes/passage | top-10 overlap | MRR@10 | R@1000 |
|---|---|---|---|---|---|---|---|---|
| flat (exact) | - | - | 1352 (1950) | 3297 | 16749 / 33498 | 1.000 | 0.828 | 0.913 |
| ivfpq | 16384 (default) | 10 | 165 (263) | 3689 | 16749 / 1858 | 0.998 | 0.828 | 0.917 |
| ivfpq | 16384 (default) | 32 | 163 (243) | 3715 | 16749 / 1858 | 1.000 | 0.828 | 0.917 |
| ivfpq | 1024 | 10 | 176 (302) | 3912 | 16749 / 1592 | 1.000 | 0.828 | 0.915 |

Building the default index (16,384 partitions, 638,976 training tokens) took 367 s, the 1024-partition one 13 s.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the stage's command line does (see its comment)

import argparse
import datetime
import tempfile
from pathlib import Path

import numpy as np

from pipeline.dense.colbert_retrieve import colbert_retrieve
from pipeline.dense.token_index import build_token_index
from pipeline.dense.tokens import encode_tokens
from pipeline.evaluate import MEAN_ROW, score_run
from pipeline.formats import read_qrels, read_run
from pipeline.precision import cpu_capability
from pipeline.timing import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path)
    parser.add_argument("--tokens", type=Path, nargs="*", help="existing token shards of the collection")
    parser.add_argument("--partitions", type=int, nargs="*", default=[], help="IVF-PQ partitions besides the default")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[10])
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--latency-queries", type=int, default=50)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="colbert-e2e-"))
    shards = args.tokens or [work / "tokens"]
    if not args.tokens:
        encode_tokens(args.model, args.collection, shards[0])
    qrels = read_qrels(args.qrels) if args.qrels else None

    def retrieve(index: Path, name: str, nprobe: int) -> tuple[dict, dict]:
        record = colbert_retrieve(args.model, index, shards, args.queries, work / f"{name}.trec", args.hits,
                                  args.depth, nprobe, args.latency_queries, args.threads)
        return record, read_run(work / f"{name}.trec")

    build_token_index(shards, work / "flat", kind="flat", threads=args.threads)
    exact_record, exact = retrieve(work / "flat", "flat", 0)
    rows = [("flat (exact)", "-", "-", exact_record, exact)]
    for partitions in [0, *args.partitions]:
        manifest = build_token_index(shards, work / f"ivfpq-{partitions}", partitions=partitions, threads=args.threads)
        for nprobe in args.nprobe:
            record, run = retrieve(work / f"ivfpq-{partitions}", f"ivfpq-{partitions}-{nprobe}", nprobe)
            rows.append((f"ivfpq{' (default P)' if not partitions else ''}", manifest["partitions"], nprobe, record,
                         run))

    print(f"# {datetime.date.today()}, {cpu_name()}, PyTorch capability {cpu_capability()}; "
          f"k' = {args.depth}, hits = {args.hits}; {exact_record['queries']} queries")
    print("| index | partitions | nprobe | ms/query median (p95) | candidates/query | token bytes/passage "
          "| index bytes/passage | top-10 overlap with exact | MRR@10 | R@1000 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, partitions, nprobe, record, run in rows:
        overlap = np.mean([len(set(list(run.get(qid, {}))[:10]) & set(list(ranked)[:10])) / max(min(10, len(ranked)), 1)
                           for qid, ranked in exact.items()])
        metrics = score_run(run, qrels, ["RR@10", "R@1000"])[MEAN_ROW] if qrels else {}
        print(f"| {name} | {partitions} | {nprobe} | {record['latency_ms_median']} ({record['latency_ms_p95']}) "
              f"| {record['candidates_median']:.0f} | {record['token_index_bytes_per_passage']:.0f} "
              f"| {record['faiss_index_bytes_per_passage']:.0f} | {overlap:.3f} "
              f"| {metrics.get('RR@10', float('nan')):.3f} | {metrics.get('R@1000', float('nan')):.3f} |")


if __name__ == "__main__":
    main()
