"""colbert_rerank: the multi-stage row. The teacher re-scores each query's BM25 top-k with MaxSim.

    python -m pipeline.dense.rerank --model resources/D/models/teacher --tokens resources/D/tokens/teacher/shard-* \
        --queries resources/D/queries.dev.tsv --candidates results/D/runs/bm25.dev.trec \
        --run results/D/runs/colbert-bm25.dev.trec --depth 1000

Candidates come from the first-stage run (its top `depth`), document token embeddings from the
precomputed token shards, query embeddings from the teacher on the fly. The latency file records
re-ranking per query (query encoding + MaxSim), the first stage's latency, their sum, and the
token index's bytes per passage (the paper's storage argument against multi-stage ColBERT).

Each token shard is verified against its manifest before use, blake2b checksum of `tokens.npy` and
`offsets.npy` included (pipeline.dense.tokens.open_token_shard): a damaged shard is refused by path.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.cli import run_stage
from pipeline.dense.runtime import device_name, model_fingerprint
from pipeline.dense.tokens import TokenStore
from pipeline.durable import atomic_output
from pipeline.formats import read_queries, read_run, write_run
from pipeline.models.backbone import tokenize_queries
from pipeline.models.colbert import ColBERT, maxsim
from pipeline.precision import describe
from pipeline.timing import rerank_latency, time_each

log = logging.getLogger(__name__)


def colbert_rerank(model: str, token_dirs: list[Path], queries_path: Path, candidates: Path, run_path: Path,
                   depth: int = 1000, latency_queries: int = 200, tag: str = "colbert-rerank") -> dict:
    """Re-rank the top `depth` candidates of every query by MaxSim; returns the timing record."""
    teacher = ColBERT.load(Path(model))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device).eval()
    store = TokenStore(token_dirs, model_fingerprint(model))
    queries, first_stage = read_queries(queries_path), read_run(candidates)

    def rerank(qid: str) -> list[tuple[str, float]]:
        pids = sorted(first_stage.get(qid, {}), key=lambda p: -first_stage[qid][p])[:depth]
        if not pids:
            return []
        tokens = tokenize_queries(teacher.tokenizer, [queries[qid]], teacher.conv).to(device)
        query = teacher.query_embeddings(tokens["input_ids"], tokens["attention_mask"])
        docs, mask = store.padded(store.positions(pids), device)
        scores = maxsim(query.float(), tokens["attention_mask"], docs, mask)[0].cpu().numpy()
        order = np.lexsort((np.array(pids), -scores))  # score, then docid for a deterministic order
        return [(pids[i], float(scores[i])) for i in order]

    with torch.inference_mode():
        ranked = {qid: rerank(qid) for qid in tqdm(queries, desc="rerank", unit="q", mininterval=5)}
        timing = time_each(list(queries)[:latency_queries], rerank)
    write_run(run_path, ranked, tag)
    record = {"queries": len(queries), "depth": depth, "device": device_name(device),
              "threads": torch.get_num_threads(), **rerank_latency(candidates, timing),
              "token_index_bytes_per_passage": round(store.bytes / max(store.passages, 1), 1),
              **describe("fp32")}  # float16 token vectors, MaxSim computed in float32
    with atomic_output(Path(run_path).with_suffix(".latency.json")) as out:
        json.dump(record, out, indent=2)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", type=Path, nargs="+", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    record = colbert_rerank(args.model, args.tokens, args.queries, args.candidates, args.run, args.depth,
                            args.latency_queries)
    log.info("re-ranked %d queries: %s ms/query; token index %s bytes/passage", record["queries"],
             record["rerank_ms_median"], record["token_index_bytes_per_passage"])


if __name__ == "__main__":
    run_stage(main)
