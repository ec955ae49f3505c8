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

TokenStore opens a complete set of shards as one memory-mapped store, for re-ranking
(pipeline.dense.rerank) and end-to-end retrieval (pipeline.dense.colbert_retrieve).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from collections.abc import Sequence
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
from pipeline.models.colbert import ColBERT
from pipeline.shards import (
    IDS_FILE,
    MANIFEST_FILE,
    files_record,
    ids_checksum,
    read_manifest,
    read_shard_ids,
    verify_npy,
    write_ids,
)

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


class TokenStore:
    """Every token shard of one collection, memory-mapped, laid end to end in shard order.

    Passage i of the store is `ids[i]`; its tokens are rows `token_offsets[i]:token_offsets[i + 1]` of the
    shards' tokens taken as one array, so an index built over all tokens in that order maps a hit (a row)
    back to its passage with `passages_of` (a binary search over the offsets: no per-token table).
    The shards must be one complete set (shards 0..n-1 of n) from one model; each is verified by
    open_token_shard (size, shape, dtype and, with `checksum`, blake2b of its arrays).
    """

    def __init__(self, shard_dirs: Sequence[Path], fingerprint: str | None = None, checksum: bool = True):
        opened = sorted(((Path(d), *open_token_shard(Path(d), fingerprint, checksum)) for d in shard_dirs),
                        key=lambda shard: shard[4]["shard"])
        first = opened[0][4]
        for directory, _, _, _, manifest in opened:
            for key in ("model_fingerprint", "dims", "shards"):
                if manifest[key] != first[key]:
                    raise InputFormatError(directory / MANIFEST_FILE, None, f"{key} = {first[key]!r} as in the "
                                           f"other token shards", repr(manifest[key]))
        if [shard[4]["shard"] for shard in opened] != list(range(first["shards"])):
            raise ValueError(f"expected token shards 0..{first['shards'] - 1}, got "
                             f"{[shard[4]['shard'] for shard in opened]}")
        self.directories = [directory for directory, *_ in opened]
        self.tokens = [tokens for _, tokens, _, _, _ in opened]
        self.manifests = [manifest for *_, manifest in opened]
        self.ids = [pid for _, _, _, ids, _ in opened for pid in ids]
        self.token_starts = np.cumsum([0] + [len(tokens) for tokens in self.tokens])  # first row of each shard
        self.token_offsets = np.concatenate([[0]] + [offsets[1:] + start for (_, _, offsets, _, _), start
                                                     in zip(opened, self.token_starts[:-1], strict=True)])
        self.dims, self.model_fingerprint = first["dims"], first["model_fingerprint"]
        self.passages, self.bytes = len(self.ids), sum(tokens.nbytes for tokens in self.tokens)

    @functools.cached_property
    def position(self) -> dict[str, int]:
        """Passage id -> position; built on first use (the end-to-end search never looks passages up by id)."""
        return {pid: i for i, pid in enumerate(self.ids)}

    def positions(self, pids: Sequence[str]) -> list[int]:
        """The positions of `pids`; a passage the shards do not hold is a KeyError naming it."""
        missing = next((pid for pid in pids if pid not in self.position), None)
        if missing is not None:
            raise KeyError(f"passage {missing} of the candidate run is not in the token index")
        return [self.position[pid] for pid in pids]

    def passages_of(self, rows: np.ndarray) -> np.ndarray:
        """The position of the passage owning each token row (rows of all shards end to end)."""
        return np.searchsorted(self.token_offsets, rows, side="right") - 1

    def padded(self, positions: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L, dim) float32 token embeddings of the passages at `positions`, zero-padded, and the (N, L) mask
        of real tokens."""
        shards = np.searchsorted(self.token_starts, self.token_offsets[positions], side="right") - 1
        pieces = [self.tokens[shard][self.token_offsets[p] - self.token_starts[shard]:
                                     self.token_offsets[p + 1] - self.token_starts[shard]]
                  for p, shard in zip(positions, shards, strict=True)]
        longest = max(len(piece) for piece in pieces)
        docs = np.zeros((len(pieces), longest, self.dims), dtype=np.float32)
        mask = np.zeros((len(pieces), longest), dtype=bool)
        for i, piece in enumerate(pieces):
            docs[i, :len(piece)], mask[i, :len(piece)] = piece, True
        return torch.from_numpy(docs).to(device), torch.from_numpy(mask).to(device)


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
