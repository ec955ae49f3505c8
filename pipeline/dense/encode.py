"""encode_corpus: one shard of the collection through a bi-encoder, as emb.npy + ids.parquet.

    python -m pipeline.dense.encode --model resources/D/models/tct_inbatch --collection resources/D/collection.tsv \
        --shard 0 --shards 8 --out resources/D/embeddings/tct_inbatch/shard-0 --dtype float16

Shard i holds lines [i * N / n, (i + 1) * N / n) of the collection, so the shards partition it in
order whatever n is. Passages are encoded in batches of similar length (less padding) and written
back in collection order. The shard directory appears only when complete (fsynced, then renamed
into place); an existing complete shard for the same model is kept.

"Complete" is verified, not assumed: the manifest records the size, shape, dtype and blake2b
checksum of `emb.npy` (computed once the file is written, before the rename: a second pass over a
file still in the page cache, about 1.5 s for a 1.7 GB MS MARCO shard against hours of encoding;
rows are written out of order within each window, so hashing them as written would mean hashing
each finished window back from the memory map: the same work in more code), and an existing shard
is checked against all of them before it is kept. A truncated, resized or damaged `emb.npy`, a
missing or unreadable file, or a manifest without the record is logged as a warning naming the
file, and the shard is encoded again.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import precision as amp_precision
from pipeline.cli import run_stage
from pipeline.dense.runtime import model_fingerprint
from pipeline.durable import atomic_directory
from pipeline.formats import InputFormatError, read_collection_shard
from pipeline.models.backbone import tokenize_passages
from pipeline.models.biencoder import BiEncoder
from pipeline.shards import EMBEDDINGS_FILE, IDS_FILE, MANIFEST_FILE, files_record, ids_checksum, open_shard, write_ids

log = logging.getLogger(__name__)
WINDOW = 50_000  # passages tokenised at a time


def encode_corpus(model: str, collection: Path, out: Path, shard: int = 0, shards: int = 1,
                  dtype: str = "float16", batch_size: int = 64, precision: str = "auto") -> dict:
    """Encode shard `shard` of `shards` of `collection` with `model`; returns the shard manifest."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, not {dtype}")
    encoder = BiEncoder.load_any(model)
    fingerprint = model_fingerprint(model)
    if (out / MANIFEST_FILE).is_file():
        try:
            _, _, manifest = open_shard(out, {"model_fingerprint": fingerprint, "dtype": dtype, "shard": shard,
                                              "shards": shards})
            log.info("%s is complete for this model (emb.npy matches its recorded size and checksum): kept", out)
            return manifest
        except InputFormatError as err:  # the message names the file (emb.npy, ids.parquet or manifest.json)
            log.warning("re-encoding %s: %s", out, err)
    ids, texts = read_collection_shard(collection, shard, shards)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = amp_precision.resolve_and_log(precision, device, "encode_corpus")
    encoder.to(device).eval()
    dims = encoder.bert.config.hidden_size
    started = time.perf_counter()
    with atomic_directory(out) as staging:
        vectors = np.lib.format.open_memmap(staging / EMBEDDINGS_FILE, mode="w+", dtype=dtype,
                                            shape=(len(ids), dims))
        progress = tqdm(total=len(ids), desc=f"encode shard {shard}", unit="passage", mininterval=5)
        with torch.inference_mode(), amp_precision.autocast(device, resolved), progress:
            # Tokenised a window at a time (token lists of a 1M-passage shard would take ~15 GB), sorted by
            # length within the window so that each batch pads to its own longest, written back in order.
            for window in range(0, len(texts), WINDOW):
                tokens = tokenize_passages(encoder.tokenizer, texts[window:window + WINDOW], encoder.conv,
                                           padding=False)
                order = np.argsort([-len(t) for t in tokens["input_ids"]], kind="stable")
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    batch = encoder.tokenizer.pad({"input_ids": [tokens["input_ids"][i] for i in rows],
                                                   "attention_mask": [tokens["attention_mask"][i] for i in rows]},
                                                  return_tensors="pt").to(device)
                    pooled = encoder(batch["input_ids"], batch["attention_mask"])
                    vectors[window + rows] = pooled.float().cpu().numpy().astype(dtype)
                    progress.update(len(rows))
        vectors.flush()
        del vectors
        write_ids(staging / IDS_FILE, ids)
        seconds = time.perf_counter() - started
        manifest = {"model": model, "model_fingerprint": fingerprint, "pooling": "mean",
                    "pool_start": encoder.conv.pool_start, "doc_length": encoder.conv.doc_length, "dims": dims,
                    "dtype": dtype, "count": len(ids), "ids_checksum": ids_checksum(ids), "shard": shard,
                    "shards": shards, "seconds": round(seconds, 3),
                    "passages_per_second": round(len(ids) / seconds, 2) if seconds else None,
                    "threads": torch.get_num_threads(), **amp_precision.describe(resolved),
                    "files": files_record(staging, [EMBEDDINGS_FILE])}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="our student directory, or a published TCT-ColBERT checkpoint")
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--batch-size", type=int, default=64)
    amp_precision.add_precision_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = encode_corpus(args.model, args.collection, args.out, args.shard, args.shards, args.dtype,
                             args.batch_size, args.precision)
    log.info("shard %d/%d: %d passages, %s passages/s", args.shard, args.shards, manifest["count"],
             manifest["passages_per_second"])


if __name__ == "__main__":
    run_stage(main)
