"""encode_queries: a model's query splits through its query encoder, plus batch-size-1 latency.

    python -m pipeline.dense.queries --model resources/D/models/tct_inbatch \
        --queries resources/D/queries.dev.tsv resources/D/queries.dl19.tsv \
        --out results/D/queries/tct_inbatch.dev results/D/queries/tct_inbatch.dl19 \
        [--timed resources/D/queries.dev.tsv] [--judged resources/D/qrels.train.txt]

One job per model: the encoder is loaded once for every split (a job's start-up, importing torch and
transformers, costs more than encoding a few thousand queries). Each split gets the same shard layout
as the corpus (emb.npy float32, ids.parquet, manifest.json); the manifest carries the encoder's latency
for one query at a time (median and p95, in ms) on the `--timed` splits (default: all), and, as a corpus
shard's, the size, shape, dtype and blake2b checksum of `emb.npy`, which search, compare_indexes and
dense_rerank verify in full when they open it (a few MB: milliseconds). `--judged` keeps only the queries
with a relevant judgement in that qrels file: mining needs a positive, and MS MARCO's train queries file
holds 0.8M queries of which 0.5M are judged. An asymmetric student (`pipeline.models.query_encoder`) writes
the fingerprint of the model whose index it searches.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline import precision as amp_precision
from pipeline.cli import run_stage
from pipeline.dense.runtime import device_name, model_fingerprint
from pipeline.durable import atomic_directory
from pipeline.formats import read_qrels, read_queries
from pipeline.models.biencoder import BiEncoder
from pipeline.models.query_encoder import QueryEncoder, is_query_encoder
from pipeline.shards import EMBEDDINGS_FILE, IDS_FILE, MANIFEST_FILE, files_record, ids_checksum, write_ids
from pipeline.timing import time_each

log = logging.getLogger(__name__)


def encode_queries(model: str, queries: Sequence[Path], outs: Sequence[Path], batch_size: int = 128,
                   precision: str = "auto", latency_queries: int = 200, timed: Collection[Path] | None = None,
                   judged: Path | None = None) -> list[dict]:
    """Encode every query of each `queries[i]` into `outs[i]`; returns the manifests written.

    Latency is timed on the files in `timed` (None: all of them); `judged` keeps the queries with a
    relevance > 0 in that qrels file."""
    if len(queries) != len(outs):
        raise ValueError(f"{len(queries)} query files but {len(outs)} output directories: give one --out per --queries")
    # An asymmetric student (EmbedDistill) is scored with another model's passages: its vectors carry that model's
    # fingerprint, which search checks against the index.
    if is_query_encoder(model):
        encoder = QueryEncoder.load(Path(model))
        fingerprint, dims = encoder.passages_fingerprint, encoder.dims
    else:
        encoder = BiEncoder.load_any(model)
        fingerprint, dims = model_fingerprint(model), encoder.bert.config.hidden_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = amp_precision.resolve_and_log(precision, device, "encode_queries")
    encoder.to(device).eval()
    positive = None
    if judged is not None:
        positive = {qid for qid, docs in read_qrels(judged).items() if any(rel > 0 for rel in docs.values())}
    manifests = []
    for queries_path, out in zip(queries, outs, strict=True):
        found = read_queries(queries_path)
        kept = found if positive is None else {qid: text for qid, text in found.items() if qid in positive}
        if positive is not None:
            log.info("%s: %d of %d queries have a relevant judgement in %s; the others are not encoded",
                     queries_path, len(kept), len(found), judged)
        ids, texts = list(kept), list(kept.values())
        chunks = [np.zeros((0, dims), dtype=np.float32)]
        timing = texts[:latency_queries] if timed is None or queries_path in timed else []
        with torch.inference_mode(), amp_precision.autocast(device, resolved):
            for start in range(0, len(texts), batch_size):
                chunks.append(encoder.encode_queries(texts[start:start + batch_size]).float().cpu().numpy())
            latency = time_each(timing, lambda text: encoder.encode_queries([text]).float().cpu())
        vectors = np.concatenate(chunks).astype(np.float32)
        manifest = {"model": model, "model_fingerprint": fingerprint, "pooling": "mean",
                    "dims": int(vectors.shape[1]), "dtype": "float32", "count": len(ids),
                    "ids_checksum": ids_checksum(ids), "queries": str(queries_path),
                    **({"judged": str(judged), "unjudged_left_out": len(found) - len(kept)} if judged else {}),
                    "device": device_name(device), "threads": torch.get_num_threads(),
                    **amp_precision.describe(resolved), **latency}
        with atomic_directory(out) as staging:
            np.save(staging / EMBEDDINGS_FILE, vectors)
            write_ids(staging / IDS_FILE, ids)
            manifest["files"] = files_record(staging, [EMBEDDINGS_FILE])
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("%s: %d queries; encoder latency %s ms (median, batch 1)", queries_path, len(ids),
                 manifest["latency_ms_median"])
        manifests.append(manifest)
    return manifests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--queries", type=Path, nargs="+", required=True, help="one queries file per split")
    parser.add_argument("--out", type=Path, nargs="+", required=True, help="one output directory per --queries")
    parser.add_argument("--batch-size", type=int, default=128)
    amp_precision.add_precision_argument(parser)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--timed", type=Path, nargs="*", default=None,
                        help="the --queries files whose batch-1 latency is timed (default: every one)")
    parser.add_argument("--judged", type=Path, default=None,
                        help="qrels: encode only the queries with a relevant judgement (mining's train split)")
    args = parser.parse_args(argv)
    if len(args.queries) != len(args.out):
        parser.error(f"{len(args.queries)} --queries files but {len(args.out)} --out directories: give one of each")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    encode_queries(args.model, args.queries, args.out, args.batch_size, args.precision, args.latency_queries,
                   args.timed, args.judged)


if __name__ == "__main__":
    run_stage(main)
