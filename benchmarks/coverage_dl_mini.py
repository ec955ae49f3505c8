"""Judgement coverage of real runs: BM25 and a dense run over ../shared/data/msmarco-dl-mini (30,091 MS MARCO
passages; TREC DL 2019's 43 topics and graded qrels, of whose 9,139 judged passages 5,698 are in the collection).

Every step is the pipeline's own stage function, as its rule would run it: prepare_data (msmarco-local,
unknown_judged keep: the qrels as published), build_bm25_index + bm25_search (k1 0.9, b 0.4, 1000 hits),
encode_corpus + build_index (flat) + encode_queries + dense_search (1000 hits) with the packaged all-MiniLM-L6-v2
as a `dense.published` model (pyserini's TCT-ColBERT conventions, float16 vectors, `precision: auto`), then
pipeline.evaluate (nDCG@10) and pipeline.coverage (Judged@10, RBP(0.8) over the top 1000 and its residual) per
run. peer-runs/BM25.dl19.trec (Anserini's BM25 over all 8.8M passages, top 100) is scored beside them for
reference: its nDCG@10 is the published 0.5058.

Work goes to --work (kept, and stages whose output is there are not run again) or to a temporary directory
removed at the end; never inside the repository. Encoding the 30k passages takes 5-20 minutes on 2 CPU cores.

    python benchmarks/coverage_dl_mini.py [--work DIR] [--data ../shared/data] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline import precision
from pipeline.coverage import coverage
from pipeline.data.local import msmarco_local_source
from pipeline.data.prepare import prepare_data
from pipeline.dense.encode import encode_corpus
from pipeline.dense.index import build_index
from pipeline.dense.queries import encode_queries
from pipeline.dense.search import dense_search
from pipeline.evaluate import MEAN_ROW, evaluate_run
from pipeline.formats import read_queries
from pipeline.models.backbone import PACKAGED_MINILM
from pipeline.shards import read_manifest
from pipeline.sparse.index import build_bm25_index
from pipeline.sparse.search import bm25_search
from pipeline.timing import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SPLIT, JUDGED_FLOOR = "dl19", 0.7


def stage(name: str, output: Path, work: Callable[[], object]) -> None:
    """Run `work` unless `output` exists (a kept --work directory); print how long it took."""
    if output.exists():
        print(f"{name}: kept from {output}", flush=True)
        return
    tick = time.perf_counter()
    work()
    print(f"{name}: {time.perf_counter() - tick:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, help="kept work directory (default: a temporary one)")
    parser.add_argument("--batch-size", type=int, default=64, help="encode_corpus batch")
    args = parser.parse_args()
    source = args.data / "msmarco-dl-mini"
    if not source.is_dir():
        print(f"skipped: real data not available: {source} is absent (it lives in ../shared/data beside the repo)")
        return
    if args.work is not None and args.work.resolve().is_relative_to(ROOT):
        parser.error(f"--work {args.work} is inside the repository: the data must not be copied into it")
    threads = torch.get_num_threads()
    print(f"{cpu_name()}; PyTorch CPU capability {precision.cpu_capability()}, native bf16: "
          f"{precision.cpu_native_bf16()}; precision auto = {precision.resolve('auto', torch.device('cpu'))}; "
          f"{threads} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="coverage-dl-mini.") as scratch:
        work = args.work or Path(scratch)
        run_all(source, work, threads, args.batch_size, args.data / "peer-runs" / "BM25.dl19.trec")


def run_all(source: Path, work: Path, threads: int, batch_size: int, peer_run: Path) -> None:
    data, runs = work / "data", work / "runs"
    collection, queries, qrels = data / "collection.tsv", data / f"queries.{SPLIT}.tsv", data / f"qrels.{SPLIT}.txt"
    files = {SPLIT: {"queries": "topics.dl19-passage.txt", "qrels": "qrels.dl19-passage.txt"}}
    stage("prepare_data", data / "manifest.json",
          lambda: prepare_data(msmarco_local_source(source, [SPLIT], files), data, [SPLIT], unknown_judged="keep"))
    stage("bm25_index", work / "bm25", lambda: build_bm25_index(collection, work / "bm25", threads))
    stage("bm25_run", runs / f"bm25.{SPLIT}.trec",
          lambda: bm25_search(work / "bm25", queries, runs / f"bm25.{SPLIT}.trec", k1=0.9, b=0.4, hits=1000,
                              threads=threads))
    shard = work / "embeddings" / "minilm" / "shard-0"
    manifest = encode_corpus(PACKAGED_MINILM, collection, shard, batch_size=batch_size)  # keeps a complete shard
    print(f"encode_corpus: {manifest['count']} passages at {manifest['passages_per_second']} passages/s "
          f"({manifest['precision']})", flush=True)
    stage("build_index (flat)", work / "dense-minilm", lambda: build_index([shard], collection, work / "dense-minilm"))
    stage("encode_queries", work / "queries", lambda: encode_queries(PACKAGED_MINILM, [queries], [work / "queries"]))
    stage("dense_run", runs / f"minilm.{SPLIT}.trec",
          lambda: dense_search(work / "dense-minilm", work / "queries", runs / f"minilm.{SPLIT}.trec", hits=1000,
                               threads=threads, tag="minilm"))

    named = {"BM25 (k1 0.9, b 0.4), 1000 hits": runs / f"bm25.{SPLIT}.trec",
             f"{PACKAGED_MINILM} (published), flat, 1000 hits": runs / f"minilm.{SPLIT}.trec"}
    if peer_run.is_file():
        named["peer-runs BM25.dl19 (8.8M passages, 100 hits)"] = peer_run
    print(f"\nTREC DL 2019, {len(read_queries(queries))} queries, {read_manifest(data)['collection']:,} passages; "
          f"Judged@10 and RBP as pipeline.coverage computes them\n")
    print(f"| run | nDCG@10 | Judged@10 | RBP(0.8) + residual | queries with top 10 < {JUDGED_FLOOR:.0%} judged |")
    print("|---|---|---|---|---|")
    for label, run in named.items():
        ndcg = evaluate_run(run, qrels, ["nDCG@10"], work / f"{run.stem}.metrics.tsv")["nDCG@10"]
        table = coverage(run, qrels)
        mean = table.pop(MEAN_ROW)
        below = sum(row["judged@10"] < JUDGED_FLOOR for row in table.values())
        print(f"| {label} | {ndcg:.4f} | {mean['judged@10']:.3f} | {mean['rbp']:.4f} + {mean['rbp_residual']:.4f} "
              f"| {below} of {len(table)} |")


if __name__ == "__main__":
    main()
