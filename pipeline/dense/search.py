"""dense_run: search a Faiss index with encoded queries; a TREC run with float32 scores.

    python -m pipeline.dense.search --index resources/D/indexes/dense-M --queries results/D/queries/M.dev \
        --run results/D/runs/M.dev.trec --hits 1000 --threads 8 [--device gpu --fp16] [--search-shards 4]

Queries and index must come from the same model (checked through their manifests). Beside the
run, `<run>.latency.json` holds the search time for one query at a time (median and p95, ms) and
the query encoder's own latency, so the row's latency is encoder + search as the paper counts it.

With faiss-gpu, `--device gpu` (or `auto`) searches on the GPU, `--fp16` storing the vectors as
float16 there (half the memory; scores stay float32). A flat index larger than the GPU is searched
in contiguous slices, one resident at a time, and the per-slice top-k lists are merged; slicing
also works on the CPU (`--search-shards N`), which is how it is tested without a GPU. Faiss has no
GPU HNSW, so HNSW always runs on the CPU; IVF-PQ is cloned to the GPU. With slices on the GPU every
search moves every slice, so the one-query latency includes those transfers: it is not the
paper's resident-index figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from pipeline.cli import run_stage
from pipeline.dense.runtime import device_name
from pipeline.durable import atomic_output
from pipeline.formats import InputFormatError, write_run
from pipeline.shards import MANIFEST_FILE, open_shard, read_manifest
from pipeline.timing import time_each

log = logging.getLogger(__name__)
DEVICES = ("cpu", "gpu", "auto")
GPU_FREE_FRACTION = 0.6  # of the free GPU memory for vectors; the rest for Faiss's scratch space and results

Hits = tuple[np.ndarray, np.ndarray]  # (scores float32, rows int64), one row per query


def faiss_isa() -> str:
    """The instruction set Faiss's loaded build was compiled for ("AVX2", "AVX512", ...): what a search stage's
    kernels ran, recorded where the encoding stages record PyTorch's CPU capability."""
    options = faiss.get_compile_options().split()
    return next((option for option in reversed(options) if option.startswith(("AVX", "SVE", "NEON"))), "generic")


def load_index(index_dir: Path) -> tuple[faiss.Index, list[str], dict]:
    """The index, its docids and its manifest, with search-time parameters applied."""
    manifest = read_manifest(index_dir)
    index = faiss.read_index(str(Path(index_dir) / "index"))
    docids = (Path(index_dir) / "docid").read_text(encoding="utf-8").splitlines()
    if index.ntotal != manifest["count"] or len(docids) != manifest["count"]:
        raise InputFormatError(index_dir, None, f"{manifest['count']} vectors and docids",
                               f"{index.ntotal} vectors, {len(docids)} docids")
    if manifest["kind"] == "hnsw":
        index.hnsw.efSearch = manifest["params"]["ef_search"]
    elif manifest["kind"] == "ivfpq":
        index.nprobe = manifest["params"]["nprobe"]
    return index, docids, manifest


def resolve_device(device: str) -> str:
    """'cpu' or 'gpu' for a requested device; asking for a GPU that Faiss cannot see is an input error."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    gpus = faiss.get_num_gpus()
    if device == "gpu" and not gpus:
        raise ValueError("device 'gpu' asked for, but Faiss sees no GPU (faiss-cpu installed, or no CUDA device "
                         "visible): install faiss-gpu (make FAISS=gpu install) or search with device 'cpu' / 'auto'")
    if device == "auto":
        return "gpu" if gpus else "cpu"
    return device


def slice_bounds(total: int, slices: int) -> list[tuple[int, int]]:
    """`slices` contiguous [start, end) row ranges covering `total` rows, sizes differing by at most one."""
    slices = max(1, min(slices, total))
    return [(total * i // slices, total * (i + 1) // slices) for i in range(slices)]


def gpu_slices(count: int, dims: int, fp16: bool, budget_bytes: int, gpus: int = 1) -> int:
    """How many slices keep each slice's vectors within `budget_bytes` per GPU (a slice is split over the GPUs)."""
    return max(1, math.ceil(count * dims * (2 if fp16 else 4) / (max(budget_bytes, 1) * max(gpus, 1))))


def merge_top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> Hits:
    """Per query, the k best candidates: score descending, exact ties by lower row.

    Faiss leaves the order of exact ties to its heaps; one explicit rule makes a sliced search
    rank exactly as the whole index does, and the run the same whatever the slice count.
    """
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


class Searcher:
    """One loaded index searched on the CPU or the GPU(s), whole or in contiguous slices (flat only)."""

    def __init__(self, index: faiss.Index, device: str = "cpu", fp16: bool = False, search_shards: int = 0,
                 batch_size: int = 256, gpu_memory_mb: int | None = None) -> None:
        self.index, self.batch_size, self.fp16 = index, batch_size, fp16
        self.device = resolve_device(device)
        flat = isinstance(index, faiss.IndexFlat)
        if self.device == "gpu" and isinstance(index, faiss.IndexHNSW):
            log.info("HNSW has no GPU implementation in Faiss: searching it on the CPU")
            self.device = "cpu"
        if fp16 and self.device == "cpu":
            log.info("fp16 is a GPU storage option: the CPU searches float32 vectors")
        if search_shards > 1 and not flat:
            log.warning("search shards apply to flat indexes only: searching the whole %s", type(index).__name__)
        self.resources = [faiss.StandardGpuResources() for _ in range(faiss.get_num_gpus())] \
            if self.device == "gpu" else []
        if not flat:
            search_shards = 1
        elif search_shards < 1:  # auto: as many slices as the GPU memory needs, none on the CPU
            search_shards = self._auto_slices(gpu_memory_mb) if self.device == "gpu" else 1
        self.bounds = slice_bounds(index.ntotal, search_shards)
        self.whole = self._to_gpu(index) if self.device == "gpu" and len(self.bounds) == 1 else index
        if len(self.bounds) > 1:
            self.vectors = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
            log.info("searching %d vectors in %d slices on the %s", index.ntotal, len(self.bounds), self.device)

    def _auto_slices(self, gpu_memory_mb: int | None) -> int:
        """Slices for the flat vectors to fit `gpu_memory_mb` per GPU (default: a share of the free memory)."""
        if gpu_memory_mb is None:
            try:
                import torch

                free = min(torch.cuda.mem_get_info(i)[0] for i in range(len(self.resources)))
            except (ImportError, RuntimeError, AssertionError):
                log.warning("cannot read the free GPU memory (torch without CUDA?): assuming the index fits; "
                            "set a GPU memory budget or a number of search shards")
                return 1
            budget = int(GPU_FREE_FRACTION * free)
        else:
            budget = gpu_memory_mb << 20
        return gpu_slices(self.index.ntotal, self.index.d, self.fp16, budget, len(self.resources))

    def _to_gpu(self, index: faiss.Index) -> faiss.Index:
        """A copy of a CPU index spread over every GPU (float16 storage when asked), nprobe kept."""
        options = faiss.GpuMultipleClonerOptions()
        options.useFloat16 = self.fp16  # flat: float16 vectors; IVF-PQ: float16 lookup tables
        options.shard = True
        placed = faiss.index_cpu_to_gpu_multiple_py(self.resources, index, options)
        if isinstance(index, faiss.IndexIVF):
            faiss.GpuParameterSpace().set_index_parameter(placed, "nprobe", index.nprobe)
        return placed

    def _slice(self, start: int, end: int) -> Callable[[np.ndarray, int], Hits]:
        """Search over rows [start, end): a flat IP index on the GPU, or Faiss's flat kernel over a CPU view."""
        if self.device == "cpu":  # the same knn_inner_product as IndexFlatIP.search, without copying the slice
            return lambda queries, k: faiss.knn(queries, self.vectors[start:end], k, faiss.METRIC_INNER_PRODUCT)
        part = faiss.IndexFlatIP(self.index.d)
        part.add(self.vectors[start:end])
        return self._to_gpu(part).search

    def _batched(self, search: Callable[[np.ndarray, int], Hits], queries: np.ndarray, k: int) -> Hits:
        parts = [search(queries[i:i + self.batch_size], k) for i in range(0, len(queries), self.batch_size)]
        return (np.concatenate([s for s, _ in parts]).astype(np.float32, copy=False),
                np.concatenate([r for _, r in parts]).astype(np.int64, copy=False))

    def search(self, queries: np.ndarray, k: int) -> Hits:
        """Top-k (scores, rows) for every query; slice by slice, each slice moved to the device once."""
        if len(self.bounds) == 1:
            return merge_top_k(*self._batched(self.whole.search, queries, k), k)
        scores = np.empty((len(queries), 0), dtype=np.float32)
        rows = np.empty((len(queries), 0), dtype=np.int64)
        for start, end in self.bounds:
            part_scores, part_rows = self._batched(self._slice(start, end), queries, min(k, end - start))
            scores, rows = merge_top_k(np.hstack([scores, part_scores]), np.hstack([rows, part_rows + start]), k)
        return scores, rows


def dense_search(index_dir: Path, queries_dir: Path, run_path: Path, hits: int = 1000, threads: int = 1,
                 batch_size: int = 256, latency_queries: int = 200, tag: str = "dense", device: str = "cpu",
                 fp16: bool = False, search_shards: int = 0, gpu_memory_mb: int | None = None) -> dict:
    """Write the top-`hits` run for every encoded query; returns the timing record.

    `device` is cpu, gpu or auto (the GPU when Faiss sees one); `search_shards` N > 1 searches a
    flat index in N slices, 0 slices only as much as the GPU memory (`gpu_memory_mb` per GPU) needs.
    """
    faiss.omp_set_num_threads(threads)
    resolve_device(device)  # fail before reading anything
    index, docids, index_manifest = load_index(index_dir)
    vectors, qids, query_manifest = open_shard(queries_dir)
    for key in ("model_fingerprint", "dims"):
        if query_manifest[key] != index_manifest[key]:
            raise InputFormatError(Path(queries_dir) / MANIFEST_FILE, None,
                                   f"{key} = {index_manifest[key]!r} as the index {index_dir}",
                                   repr(query_manifest[key]))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    searcher = Searcher(index, device, fp16, search_shards, batch_size, gpu_memory_mb)
    k = min(hits, index.ntotal)
    started = time.perf_counter()
    scores, rows = searcher.search(vectors, k)
    batch_seconds = time.perf_counter() - started
    ranked = {qid: [(docids[i], float(s)) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
              for qid, row_scores, row_ids in zip(qids, scores, rows, strict=True)}
    write_run(run_path, ranked, tag)
    search = time_each(range(min(latency_queries, len(qids))), lambda row: searcher.search(vectors[row:row + 1], k))
    timing = {"queries": len(qids), "threads": threads, "hits": hits, "index": index_manifest["kind"],
              "device": searcher.device, "device_name": device_name("cuda" if searcher.device == "gpu" else "cpu"),
              "fp16": fp16 and searcher.device == "gpu", "latency_queries": search["latency_queries"],
              "index_bytes_per_passage": index_manifest.get("bytes_per_passage"),
              "search_shards": len(searcher.bounds),
              "batch_seconds": round(batch_seconds, 3), "search_ms_median": search["latency_ms_median"],
              "search_ms_p95": search["latency_ms_p95"], "encoder_ms_median": query_manifest.get("latency_ms_median"),
              "precision": "fp16" if fp16 and searcher.device == "gpu" else "fp32", "cpu_capability": faiss_isa()}
    parts = [timing["search_ms_median"], timing["encoder_ms_median"]]
    timing["latency_ms_median"] = round(sum(parts), 3) if None not in parts else None
    with atomic_output(Path(run_path).with_suffix(".latency.json")) as out:
        json.dump(timing, out, indent=2)
    return timing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="directory written by pipeline.dense.queries")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--hits", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--tag", default="dense")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="auto: the GPU when Faiss sees one")
    parser.add_argument("--fp16", action="store_true", help="float16 vectors on the GPU (scores stay float32)")
    parser.add_argument("--search-shards", type=int, default=0,
                        help="search a flat index in N contiguous slices; 0: as the GPU memory needs (none on CPU)")
    parser.add_argument("--gpu-memory-mb", type=int, default=None,
                        help=f"per-GPU budget for the vectors (default: {GPU_FREE_FRACTION:.0%} of the free memory)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    timing = dense_search(args.index, args.queries, args.run, args.hits, args.threads,
                          latency_queries=args.latency_queries, tag=args.tag, device=args.device, fp16=args.fp16,
                          search_shards=args.search_shards, gpu_memory_mb=args.gpu_memory_mb)
    log.info("searched %d queries on the %s in %d slice(s); %s ms/query search latency", timing["queries"],
             timing["device"], timing["search_shards"], timing["search_ms_median"])


if __name__ == "__main__":
    run_stage(main)
