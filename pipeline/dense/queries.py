"""encode_queries: a split's queries through the query encoder, plus its batch-size-1 latency.

    python -m pipeline.dense.queries --model resources/D/models/tct_inbatch --queries resources/D/queries.dev.tsv \
        --out results/D/queries/tct_inbatch.dev

Writes the same shard layout as the corpus (emb.npy float32, ids.parquet, manifest.json); the
manifest also carries the encoder's latency for one query at a time (median and p95, in ms), and,
as a corpus shard's, the size, shape, dtype and blake2b checksum of `emb.npy`, which search,
compare_indexes and dense_rerank verify in full when they open it (a few MB: milliseconds).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from pipeline import precision as amp_precision
from pipeline.cli import run_stage
from pipeline.dense.runtime import device_name, model_fingerprint
from pipeline.io import (
    EMBEDDINGS_FILE,
    IDS_FILE,
    MANIFEST_FILE,
    atomic_directory,
    files_record,
    ids_checksum,
    read_queries,
    write_ids,
)
from pipeline.models.biencoder import BiEncoder
from pipeline.timing import time_each

log = logging.getLogger(__name__)


def encode_queries(model: str, queries_path: Path, out: Path, batch_size: int = 128, precision: str = "auto",
                   latency_queries: int = 200) -> dict:
    """Encode every query of `queries_path`; returns the manifest written into `out`."""
    encoder = BiEncoder.load_any(model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = amp_precision.resolve_and_log(precision, device, "encode_queries")
    encoder.to(device).eval()
    queries = read_queries(queries_path)
    ids, texts = list(queries), list(queries.values())
    chunks = []
    with torch.inference_mode(), amp_precision.autocast(device, resolved):
        for start in range(0, len(texts), batch_size):
            chunks.append(encoder.encode_queries(texts[start:start + batch_size]).float().cpu().numpy())
        latency = time_each(texts[:latency_queries], lambda text: encoder.encode_queries([text]).float().cpu())
    vectors = np.concatenate(chunks).astype(np.float32)
    manifest = {"model": model, "model_fingerprint": model_fingerprint(model), "pooling": "mean",
                "dims": int(vectors.shape[1]), "dtype": "float32", "count": len(ids), "ids_checksum": ids_checksum(ids),
                "queries": str(queries_path), "device": device_name(device), "threads": torch.get_num_threads(),
                **amp_precision.describe(resolved), **latency}
    with atomic_directory(out) as staging:
        np.save(staging / EMBEDDINGS_FILE, vectors)
        write_ids(staging / IDS_FILE, ids)
        manifest["files"] = files_record(staging, [EMBEDDINGS_FILE])
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    amp_precision.add_precision_argument(parser)
    parser.add_argument("--latency-queries", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = encode_queries(args.model, args.queries, args.out, args.batch_size, args.precision,
                              args.latency_queries)
    log.info("%d queries; encoder latency %s ms (median, batch 1)", manifest["count"], manifest["latency_ms_median"])


if __name__ == "__main__":
    run_stage(main)
