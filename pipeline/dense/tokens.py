"""encode_tokens: the ColBERT teacher's token embeddings of one collection shard (for re-ranking).

    python -m pipeline.dense.tokens --model resources/D/models/teacher --collection resources/D/collection.tsv \
        --shard 0 --shards 8 --out resources/D/tokens/teacher/shard-0

A shard holds `tokens.npy` (all kept tokens of its passages, float16 by default), `offsets.npy`
(passage i owns rows offsets[i]:offsets[i+1]), `ids.parquet` and a manifest. Only the tokens that
take part in MaxSim are stored: padding and punctuation are dropped, as in ColBERT's own index.

As an embedding shard's, the manifest records the size, shape, dtype and blake2b checksum of
`tokens.npy` and `offsets.npy` (`files`, computed once they are written, before the directory is
renamed into place), and open_token_shard refuses, naming the file, one that does not match. The
shard is always written afresh (there is no keep-if-complete step to verify).
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
from pipeline.io import (
    IDS_FILE,
    MANIFEST_FILE,
    InputFormatError,
    atomic_directory,
    files_record,
    ids_checksum,
    read_collection_shard,
    read_manifest,
    read_shard_ids,
    verify_npy,
    write_ids,
)
from pipeline.models.backbone import tokenize_passages
from pipeline.models.colbert import ColBERT

log = logging.getLogger(__name__)
TOKENS_FILE, OFFSETS_FILE = "tokens.npy", "offsets.npy"


def encode_tokens(model: str, collection: Path, out: Path, shard: int = 0, shards: int = 1,
                  dtype: str = "float16", batch_size: int = 64, precision: str = "auto") -> dict:
    """Write the token embeddings of shard `shard` of `shards`; returns the manifest."""
    teacher = ColBERT.load(Path(model))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = amp_precision.resolve_and_log(precision, device, "encode_tokens")
    teacher.to(device).eval()
    ids, texts = read_collection_shard(collection, shard, shards)
    per_passage: list[np.ndarray] = [np.empty((0, teacher.linear.out_features), dtype=dtype)] * len(ids)
    started = time.perf_counter()
    with torch.inference_mode(), amp_precision.autocast(device, resolved):
        for start in tqdm(range(0, len(texts), batch_size), desc=f"tokens shard {shard}", mininterval=5):
            tokens = tokenize_passages(teacher.tokenizer, texts[start:start + batch_size], teacher.conv).to(device)
            embeddings, mask = teacher.doc_embeddings(tokens["input_ids"], tokens["attention_mask"])
            embeddings = embeddings.float().cpu().numpy().astype(dtype)
            for row, keep in enumerate(mask.cpu().numpy()):
                per_passage[start + row] = embeddings[row][keep]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in per_passage])
    with atomic_directory(out) as staging:
        np.save(staging / TOKENS_FILE, np.concatenate(per_passage) if per_passage else np.empty((0, 0), dtype))
        np.save(staging / OFFSETS_FILE, offsets)
        write_ids(staging / IDS_FILE, ids)
        manifest = {"model": model, "model_fingerprint": model_fingerprint(model), "kind": "tokens",
                    "dims": teacher.linear.out_features, "dtype": dtype, "count": len(ids), "tokens": int(offsets[-1]),
                    "ids_checksum": ids_checksum(ids), "shard": shard, "shards": shards,
                    "bytes_per_passage": round(int(offsets[-1]) * teacher.linear.out_features
                                               * np.dtype(dtype).itemsize / max(len(ids), 1), 1),
                    "seconds": round(time.perf_counter() - started, 3), **amp_precision.describe(resolved),
                    "files": files_record(staging, [TOKENS_FILE, OFFSETS_FILE])}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def open_token_shard(directory: Path, fingerprint: str | None = None,
                     checksum: bool = True) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """(tokens memory-mapped, offsets, ids, manifest) of a token shard, each checked against the manifest.

    `tokens.npy` and `offsets.npy` must have the size, shape and dtype the manifest records and, with
    `checksum`, its blake2b checksum (the whole file is read and hashed, about 1 s per GB here: a few
    minutes for an MS MARCO token index of some 150 GB, small beside re-ranking its candidates on a CPU);
    the offsets must cover every token of every passage. With `fingerprint`, the shard must come from
    that model.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("kind") != "tokens" or (fingerprint is not None and manifest.get("model_fingerprint")
                                            != fingerprint):
        raise InputFormatError(directory / MANIFEST_FILE, None, "token embeddings of the re-ranking teacher",
                               str(manifest.get("model")))
    for name in (TOKENS_FILE, OFFSETS_FILE):
        verify_npy(directory / name, (manifest.get("files") or {}).get(name), checksum)
    tokens = np.load(directory / TOKENS_FILE, mmap_mode="r")
    offsets = np.load(directory / OFFSETS_FILE)
    ids = read_shard_ids(directory / IDS_FILE)
    if len(offsets) != len(ids) + 1 or offsets[-1] != tokens.shape[0] or len(ids) != manifest["count"]:
        raise InputFormatError(directory, None, "offsets covering every token of every passage")
    if ids_checksum(ids) != manifest["ids_checksum"]:
        raise InputFormatError(directory / IDS_FILE, None, "the ids whose checksum the manifest records")
    return tokens, offsets, ids, manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a teacher directory written by pipeline.train.teacher")
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--batch-size", type=int, default=64)
    amp_precision.add_precision_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = encode_tokens(args.model, args.collection, args.out, args.shard, args.shards, args.dtype,
                             args.batch_size, args.precision)
    log.info("shard %d: %d passages, %d tokens, %.0f bytes/passage", args.shard, manifest["count"],
             manifest["tokens"], manifest["bytes_per_passage"])


if __name__ == "__main__":
    run_stage(main)
