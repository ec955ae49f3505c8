"""colbert: the teacher retrieving end to end as ColBERT v1 does (the paper's ColBERT row).

    python -m pipeline.dense.colbert_retrieve --model resources/D/models/teacher \
        --index resources/D/indexes/colbert-teacher --tokens resources/D/tokens/teacher/shard-* \
        --queries resources/D/queries.dev.tsv --run results/D/runs/colbert.dev.trec [--hits 1000 --depth 1000 \
        --nprobe 10 --threads 8]

Two stages (ColBERT v1, Khattab & Zaharia 2020, Sec. 3.6): each query token's `depth` (k') nearest
document tokens in the token index (pipeline.dense.token_index), searching `nprobe` of its partitions;
the passages owning them are the candidates, re-ranked by exact MaxSim over their float16 token
embeddings (memory-mapped token shards), computed in float32. The run holds the top `hits` (score,
then docid for ties, as pipeline.dense.rerank).

- k' (`--depth`). Paper: k' = k = 1000 (Sec. 4.1.2; "e.g. k' = k/2" in Sec. 3.6). Released:
  `--faiss_depth` 1024 (colbert/retrieve.py). Here: 1000, the paper's k' = k.
- nprobe. Paper: p = 10 (Sec. 3.6, 4.1.2). Released: `--nprobe` 10 (colbert/utils/parser.py); the
  README's command passes 32. Here: 10.
- second stage. Paper: 16-bit values per dimension (Sec. 4.1.2). Here: the float16 token shards.

Faiss searches on the CPU, as in ColBERT v1's retrieval (colbert/ranking/faiss_index.py; the paper's
458 ms is "mostly CPU-based", faiss on all cores); MaxSim runs on the GPU when torch has one. The
queries' tokens are searched many queries at once; the latency file times one query at a time
(encoding, search, candidates, MaxSim, sort) over `latency_queries` queries, beside the candidates per
query and the storage per passage (token shards and index), in the shape of rerank's latency file.
Run as a command, the stage makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE unless set): torch
and faiss-cpu each bring an OpenMP runtime, alternating in every query, and the spinning workers of one
starved the other (743 ms a query instead of 151 ms on 2 cores). A caller importing the module should
set it before torch and faiss are imported.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Every query alternates torch (encoding, MaxSim) and Faiss (search), two OpenMP runtimes (faiss-cpu
    # bundles its own libgomp); workers of one left spinning starve the other's. On 2 cores a query took
    # 743 ms instead of 151 ms with both at 2 threads. Read when the runtimes load: set before the imports.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import logging
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.dense.runtime import device_name, model_fingerprint
from pipeline.dense.token_index import open_token_index
from pipeline.dense.tokens import TokenStore
from pipeline.durable import atomic_output
from pipeline.formats import read_queries, write_run
from pipeline.models.backbone import tokenize_queries
from pipeline.models.colbert import ColBERT, maxsim
from pipeline.precision import describe
from pipeline.timing import time_each

log = logging.getLogger(__name__)
QUERY_BATCH = 128  # queries encoded and searched together for the run (36 tokens x k' hits each)
CANDIDATE_BLOCK = 1024  # candidates padded and scored at a time: up to 32 x 1000 of them per query


def colbert_retrieve(model: str, index_dir: Path, token_dirs: list[Path], queries_path: Path, run_path: Path,
                     hits: int = 1000, depth: int = 1000, nprobe: int = 10, latency_queries: int = 200,
                     threads: int = 0, tag: str = "colbert") -> dict:
    """Retrieve the top `hits` passages of every query end to end; returns the timing record."""
    if threads > 0:
        faiss.omp_set_num_threads(threads)
        torch.set_num_threads(threads)
    teacher = ColBERT.load(Path(model))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device).eval()
    store = TokenStore(token_dirs, model_fingerprint(model))
    index, manifest = open_token_index(index_dir, store)
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe
    queries = read_queries(queries_path)
    qids = list(queries)

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = tokenize_queries(teacher.tokenizer, texts, teacher.conv).to(device)
        return teacher.query_embeddings(tokens["input_ids"], tokens["attention_mask"]).float(), tokens["attention_mask"]

    def candidates(vectors: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
        """Per query, the positions of the passages owning the `depth` nearest tokens of any of its tokens."""
        keep = mask.bool()
        _, rows = index.search(np.ascontiguousarray(vectors[keep].cpu().numpy()), depth)
        per_query = np.split(rows, np.cumsum(keep.sum(1).cpu().numpy())[:-1])
        return [np.unique(store.passages_of(found[found >= 0])) for found in per_query]  # -1: fewer than depth

    def rank(vector: torch.Tensor, mask: torch.Tensor, positions: np.ndarray) -> list[tuple[str, float]]:
        if not len(positions):
            return []
        scores = np.concatenate([maxsim(vector[None], mask[None], *store.padded(positions[i:i + CANDIDATE_BLOCK],
                                                                                device))[0].cpu().numpy()
                                 for i in range(0, len(positions), CANDIDATE_BLOCK)])
        pids = np.array([store.ids[p] for p in positions])
        order = np.lexsort((pids, -scores))[:hits]  # score, then docid for a deterministic order
        return [(str(pids[i]), float(scores[i])) for i in order]

    def retrieve_one(qid: str) -> list[tuple[str, float]]:
        vectors, mask = encode([queries[qid]])
        return rank(vectors[0], mask[0], candidates(vectors, mask)[0])

    ranked, counts = {}, []
    with torch.inference_mode():
        started = time.perf_counter()
        for start in tqdm(range(0, len(qids), QUERY_BATCH), desc="colbert", unit="batch", mininterval=5):
            batch = qids[start:start + QUERY_BATCH]
            vectors, mask = encode([queries[qid] for qid in batch])
            for qid, vector, row_mask, found in zip(batch, vectors, mask, candidates(vectors, mask), strict=True):
                counts.append(len(found))
                ranked[qid] = rank(vector, row_mask, found)
        batch_seconds = time.perf_counter() - started
        timing = time_each(qids[:latency_queries], retrieve_one)
    write_run(run_path, ranked, tag)
    token_bytes = round(store.bytes / max(store.passages, 1), 1)
    record = {"queries": len(queries), "hits": hits, "depth": depth, "index": manifest["kind"],
              "metric": manifest["metric"], "partitions": manifest["partitions"],
              "nprobe": nprobe if isinstance(index, faiss.IndexIVF) else None,
              "device": device_name(device), "faiss_device": "cpu", "threads": torch.get_num_threads(),
              "faiss_threads": faiss.omp_get_max_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              "latency_queries": timing["latency_queries"],
              "latency_ms_median": timing["latency_ms_median"], "latency_ms_p95": timing["latency_ms_p95"],
              "batch_seconds": round(batch_seconds, 3),
              "candidates_median": float(np.median(counts)) if counts else None,
              "token_index_bytes_per_passage": token_bytes,
              "faiss_index_bytes_per_passage": manifest["index_bytes_per_passage"],
              "storage_bytes_per_passage": round(token_bytes + manifest["index_bytes_per_passage"], 1),
              **describe("fp32")}  # float16 token vectors, MaxSim computed in float32
    with atomic_output(Path(run_path).with_suffix(".latency.json")) as out:
        json.dump(record, out, indent=2)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the teacher whose token shards were indexed")
    parser.add_argument("--index", type=Path, required=True, help="directory written by pipeline.dense.token_index")
    parser.add_argument("--tokens", type=Path, nargs="+", required=True, help="the token shards it was built from")
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=1000, help="k': nearest tokens per query token (paper: 1000)")
    parser.add_argument("--nprobe", type=int, default=10, help="IVF partitions searched per query token (paper: 10)")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="Faiss and torch threads; 0: their defaults")
    parser.add_argument("--tag", default="colbert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    record = colbert_retrieve(args.model, args.index, args.tokens, args.queries, args.run, args.hits, args.depth,
                              args.nprobe, args.latency_queries, args.threads, args.tag)
    log.info("retrieved %d queries: %s ms/query, %s candidates/query; %s bytes/passage stored", record["queries"],
             record["latency_ms_median"], record["candidates_median"], record["storage_bytes_per_passage"])


if __name__ == "__main__":
    run_stage(main)
