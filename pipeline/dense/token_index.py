"""colbert_index: the teacher's token embeddings in one Faiss index, for end-to-end retrieval as ColBERT v1.

    python -m pipeline.dense.token_index --tokens resources/D/tokens/teacher/shard-* \
        --out resources/D/indexes/colbert-teacher [--kind ivfpq --partitions 0 --pq-m 16 --pq-bits 8 \
        --sample 0.05 --metric l2 --threads 8]

ColBERT v1 (Khattab & Zaharia, SIGIR 2020, arXiv 2004.12832; released code stanford-futuredata/ColBERT
v0.2, now its `colbertv1` branch) indexes every document token embedding in a Faiss IVF-PQ index:

- partitions P. Paper: 2,000 on MS MARCO (Sec. 4.1.2; "e.g. P = 1000" in Sec. 3.6). Released:
  `1 << ceil(log2(8 sqrt(tokens)))` when `--partitions` is not given (colbert/index_faiss.py); the
  README's MS MARCO command passes 32768. Here: the released rule, capped at tokens / 39.
- PQ sub-vectors s and their bits. Paper: 16, one byte each (Sec. 3.6, 4.1.2). Released:
  `IndexIVFPQ(quantizer, dim, partitions, 16, 8)` (colbert/indexing/faiss_index.py). Here: 16 x 8 bits.
- training sample. Paper: not stated. Released: 5% of the embeddings (colbert/indexing/encoder.py
  keeps `size // 20` random rows of each part as `.sample`, which colbert/indexing/faiss.py trains on
  unless `--sample` is given); the README passes `--sample 0.3`. Here: 5%.
- metric. Paper: squared L2, "as we found our faiss index was faster at L2-based retrieval" (Sec.
  4.1.2; its end-to-end row is ColBERT_L2). Released: L2 (an `IndexFlatL2` quantizer and
  `IndexIVFPQ`'s default metric). Here: l2, `--metric ip` on request.

Partitions: the paper's 2,000 is a single figure for 8.8M passages and cannot be one for every collection,
so the default is the authors' own scaling rule from their released code. Faiss's k-means wants at
least 39 training points per centroid (it warns below that and cannot train below one), so the rule is
capped at tokens // 39 and an explicit `--partitions` above it is refused; the training sample is raised
to 39 points per centroid when the fraction gives fewer, and cut at 256 (beyond which Faiss would
subsample it anyway; the PQ codebooks' 2^bits centroids count too). For the paper's exact setting on
MS MARCO pass `--partitions 2000`.

The metric does not change which tokens are nearest: document tokens are L2-normalised, so for a query
token q, |q - d|^2 = |q|^2 + 1 - 2 q.d ranks them as q.d does; it changes how IVF-PQ approximates. The
`flat` kind (exact search; for tests and small collections) uses the same metric.

The token -> passage mapping is the token shards' own offsets (pipeline.dense.tokens.TokenStore): the
index holds every token in shard order, so its ids (Faiss's 8-byte ids, part of the index's bytes) are
the shards' rows end to end, and a row's passage is found in the offsets: no per-token passage table
(ColBERT v1's `emb2pid`, 4 bytes a token in memory). The manifest records each shard's checksums and
retrieval refuses other shards. Shards are verified (blake2b) when opened, then
streamed into the index a block at a time; only the training sample is held beside the index.

With faiss-gpu the costly parts run on the GPU(s) as in the released code's GPU indexing: the k-means
assignments of training and the coarse assignment of every token added (Faiss's `clustering_index`
and a GPU copy of the quantizer, as faiss/benchs/bench_all_ivf does); PQ encoding and the index stay
on the CPU, so the index never has to fit in GPU memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import faiss
import numpy as np

from pipeline.cli import run_stage
from pipeline.dense.tokens import OFFSETS_FILE, TOKENS_FILE, TokenStore
from pipeline.durable import atomic_directory
from pipeline.formats import InputFormatError
from pipeline.shards import CHECKSUM, MANIFEST_FILE, checksum_mismatch, file_checksum, read_manifest

log = logging.getLogger(__name__)
KINDS = ("ivfpq", "flat")
METRICS = {"l2": faiss.METRIC_L2, "ip": faiss.METRIC_INNER_PRODUCT}
INDEX_FILE = "index.faiss"
MIN_POINTS, MAX_POINTS = 39, 256  # Faiss's min_points_per_centroid and max_points_per_centroid
BLOCK = 65536  # token rows converted to float32 and added at a time (32 MB at 128 dims)


def default_partitions(tokens: int) -> int:
    """ColBERT v1's released rule, 1 << ceil(log2(8 sqrt(tokens))), capped at tokens // 39 (Faiss's minimum)."""
    return max(1, min(1 << math.ceil(math.log2(8 * math.sqrt(max(tokens, 1)))), tokens // MIN_POINTS))


def gpu_copy(index: faiss.Index) -> faiss.Index | None:
    """`index` cloned onto every GPU Faiss sees; None without faiss-gpu or a GPU."""
    return faiss.index_cpu_to_all_gpus(index) if faiss.get_num_gpus() else None


def _shard_record(store: TokenStore) -> list[dict]:
    """What ties the index to its token shards: each shard's id checksum and array checksums."""
    return [{"shard": m["shard"], "ids_checksum": m["ids_checksum"],
             **{name: m["files"][name][CHECKSUM] for name in (TOKENS_FILE, OFFSETS_FILE)}} for m in store.manifests]


def _training_sample(store: TokenStore, size: int, seed: int) -> np.ndarray:
    """`size` distinct token rows drawn at random (seeded) from all shards, as float32."""
    total = int(store.token_offsets[-1])
    picks = np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))
    parts = []
    for tokens, start in zip(store.tokens, store.token_starts[:-1], strict=True):
        local = picks[(picks >= start) & (picks < start + len(tokens))] - start
        if len(local):  # an empty shard's array is (0, 0)
            parts.append(np.asarray(tokens[local], dtype=np.float32))
    return np.concatenate(parts)


def _train(index: faiss.IndexIVFPQ, sample: np.ndarray, metric: int) -> None:
    clustering = gpu_copy(faiss.IndexFlat(index.d, metric))  # the k-means assignments: most of the training time
    if clustering is not None:
        index.clustering_index = clustering
    index.train(sample)
    index.clustering_index = None


def _add_all(index: faiss.Index, store: TokenStore) -> None:
    """Every token, shard by shard in BLOCK rows, with the coarse quantizer on the GPU when there is one."""
    quantizer = index.quantizer if isinstance(index, faiss.IndexIVF) else None
    on_gpu = gpu_copy(quantizer) if quantizer is not None else None
    if on_gpu is not None:
        index.quantizer = on_gpu
    try:
        for tokens in store.tokens:
            for start in range(0, len(tokens), BLOCK):
                index.add(np.ascontiguousarray(tokens[start:start + BLOCK], dtype=np.float32))
    finally:
        if on_gpu is not None:
            index.quantizer = quantizer  # the CPU quantizer is what write_index saves


def build_token_index(token_dirs: list[Path], out: Path, kind: str = "ivfpq", partitions: int = 0, pq_m: int = 16,
                      pq_bits: int = 8, sample: float = 0.05, metric: str = "l2", seed: int = 13,
                      threads: int = 0) -> dict:
    """Index every token of the shards; returns the manifest. `partitions` 0: default_partitions."""
    if kind not in KINDS or metric not in METRICS:
        raise ValueError(f"kind must be one of {KINDS} and metric one of {tuple(METRICS)}, not {kind!r}, {metric!r}")
    if threads > 0:
        faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    store = TokenStore(token_dirs)
    tokens = int(store.token_offsets[-1])
    params: dict[str, int | float | None] = {"partitions": None, "pq_m": None, "pq_bits": None, "sample": None,
                                             "sample_fraction": None}
    if kind == "ivfpq":
        partitions = partitions or default_partitions(tokens)
        if store.dims % pq_m:
            raise ValueError(f"IVF-PQ splits each vector into pq_m = {pq_m} parts: choose pq_m dividing the "
                             f"teacher's {store.dims} dimensions")
        if tokens < max(MIN_POINTS * partitions, 2 ** pq_bits):
            raise ValueError(f"IVF-PQ with {partitions} partitions and {pq_bits}-bit codes needs at least "
                             f"{max(MIN_POINTS * partitions, 2 ** pq_bits)} tokens to train, the shards hold "
                             f"{tokens}: lower --partitions / --pq-bits (0 partitions: the largest that trains) or "
                             "use --kind flat")
        centroids = max(partitions, 2 ** pq_bits)
        size = min(tokens, max(math.ceil(sample * tokens), MIN_POINTS * centroids), MAX_POINTS * centroids)
        index = faiss.IndexIVFPQ(faiss.IndexFlat(store.dims, METRICS[metric]), store.dims, partitions, pq_m, pq_bits,
                                 METRICS[metric])
        _train(index, _training_sample(store, size, seed), METRICS[metric])
        params.update(partitions=partitions, pq_m=pq_m, pq_bits=pq_bits, sample=size, sample_fraction=sample)
    else:
        index = faiss.IndexFlat(store.dims, METRICS[metric])
    _add_all(index, store)
    first = store.manifests[0]
    with atomic_directory(out) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        size_bytes = (staging / INDEX_FILE).stat().st_size
        manifest = {"model": first["model"], "model_fingerprint": store.model_fingerprint, "kind": kind,
                    "metric": metric, **params, "dims": store.dims, "tokens": tokens, "passages": store.passages,
                    "index_bytes": size_bytes,
                    "index_bytes_per_passage": round(size_bytes / max(store.passages, 1), 1),
                    "token_bytes_per_passage": round(store.bytes / max(store.passages, 1), 1),
                    "token_shards": _shard_record(store), "seconds": round(time.perf_counter() - started, 3),
                    "files": {INDEX_FILE: {"bytes": size_bytes, CHECKSUM: file_checksum(staging / INDEX_FILE)}}}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def open_token_index(directory: Path, store: TokenStore) -> tuple[faiss.Index, dict]:
    """The index and its manifest, refused (naming the file) unless its size and blake2b checksum are the
    manifest's and it was built from the token shards of `store`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("kind") not in KINDS or "token_shards" not in manifest:
        raise InputFormatError(directory / MANIFEST_FILE, None, "a token index written by pipeline.dense.token_index")
    if manifest["token_shards"] != _shard_record(store):
        raise InputFormatError(directory / MANIFEST_FILE, None, "the token shards this index was built from",
                               f"shards {[str(d) for d in store.directories]} with other ids or checksums")
    path, record = directory / INDEX_FILE, manifest["files"][INDEX_FILE]
    if not path.is_file() or path.stat().st_size != record["bytes"]:
        raise InputFormatError(path, None, f"{record['bytes']} bytes, as the index's manifest records",
                               f"{path.stat().st_size if path.is_file() else 'no'} bytes: a truncated or missing file")
    if file_checksum(path) != record[CHECKSUM]:
        raise checksum_mismatch(path)
    return faiss.read_index(str(path)), manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=Path, nargs="+", required=True, help="token shards (pipeline.dense.tokens)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kind", choices=KINDS, default="ivfpq", help="flat: exact search (small collections)")
    parser.add_argument("--partitions", type=int, default=0,
                        help="IVF cells; 0: 1 << ceil(log2(8 sqrt(tokens))) capped at tokens / 39 (ColBERT v1's "
                             "released rule; the paper used 2000 on MS MARCO)")
    parser.add_argument("--pq-m", type=int, default=16, help="PQ sub-vectors per token (ColBERT v1: 16)")
    parser.add_argument("--pq-bits", type=int, default=8, help="bits per sub-vector code (ColBERT v1: 8)")
    parser.add_argument("--sample", type=float, default=0.05,
                        help="fraction of the tokens to train on (ColBERT v1's default: 5%%)")
    parser.add_argument("--metric", choices=tuple(METRICS), default="l2", help="ColBERT v1 indexes with L2")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=0, help="Faiss threads; 0: all cores")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = build_token_index(args.tokens, args.out, args.kind, args.partitions, args.pq_m, args.pq_bits,
                                 args.sample, args.metric, args.seed, args.threads)
    log.info("%s index of %d tokens (%d passages, %s partitions): %.0f bytes/passage, token shards %.0f",
             manifest["kind"], manifest["tokens"], manifest["passages"], manifest["partitions"],
             manifest["index_bytes_per_passage"], manifest["token_bytes_per_passage"])


if __name__ == "__main__":
    run_stage(main)
