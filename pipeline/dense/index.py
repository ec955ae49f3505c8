"""build_index: gather embedding shards into a Faiss index (flat inner product by default).

    python -m pipeline.dense.index --shards resources/D/embeddings/M/shard-* --collection resources/D/collection.tsv \
        --out resources/D/indexes/dense-M --kind flat

Shards are streamed in order in blocks and their ids held only as the docid file's lines, so peak
memory stays near the size of the index itself (benchmarks/build_index.py measures it).
The output directory holds `index` and `docid` (the layout pyserini's FaissSearcher reads) and a
manifest with the model, dimensions and a checksum of the ids, checked against the collection.

Every shard is verified against its manifest: the size, shape and dtype of `emb.npy` before anything is
read (a truncated file is refused by path, not by a failing mmap), and its blake2b checksum while it
is streamed into the index: no second read, and each block is hashed in a second thread while it is
added (on 614 MB of float16 shards on 2 cores, streaming into a flat index took 0.84 s with the
checksum, 0.73 s without, 1.26 s hashing in line; see pipeline.shards for the policy). A mismatch stops
the build, naming the file, before the index is written.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from pipeline.cli import run_stage
from pipeline.durable import atomic_directory, atomic_output
from pipeline.formats import InputFormatError, read_collection
from pipeline.shards import (
    CHECKSUM,
    EMBEDDINGS_FILE,
    MANIFEST_FILE,
    checksum_mismatch,
    lines_checksum,
    new_checksum,
    npy_header,
    open_shard,
)

log = logging.getLogger(__name__)
KINDS = ("flat", "hnsw", "ivfpq")
BLOCK = 16384  # rows read and converted to float32 at a time for index.add (HNSW's graph depends on it)
FLAT_BLOCK = 1024  # rows read at a time into the flat index: a small buffer, as the copy is all there is to do


def _empty_index(kind: str, dims: int, params: dict) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dims)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dims, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
        return index
    quantizer = faiss.IndexFlatIP(dims)
    return faiss.IndexIVFPQ(quantizer, dims, params["nlist"], params["pq_m"], params["pq_bits"],
                            faiss.METRIC_INNER_PRODUCT)


def _blocks(path: Path, rows: int, record: dict | None = None) -> Iterator[np.ndarray]:
    """A shard's vectors `rows` rows at a time, read from the file (not memory-mapped, so that pages already
    copied into the index do not stay resident) into one buffer: each block is overwritten by the next, so
    the block being read and the one just consumed are never both alive.

    With `record` (the manifest's entry for the file) the file's bytes are hashed as they are read and,
    once the last block has been consumed, a checksum other than the recorded one is refused."""
    shape, dtype, fortran_order, offset = npy_header(path)
    if fortran_order or len(shape) != 2:
        raise InputFormatError(path, None, "a 2-d array in C order", f"shape {shape}, fortran {fortran_order}")
    # The hash of a block runs in a thread (hashlib releases the GIL) while the caller adds the same block to
    # the index, and is waited for before the buffer is read over: hashing costs little wall time.
    with open(path, "rb") as handle, ThreadPoolExecutor(1) as hasher:
        digest = None
        if record is not None:
            digest = new_checksum()
            digest.update(handle.read(offset))
        handle.seek(offset)
        buffer = np.empty((min(rows, shape[0]), shape[1]), dtype=dtype)
        for start in range(0, shape[0], rows):
            block = buffer[:min(rows, shape[0] - start)]
            if handle.readinto(block) != block.nbytes:
                raise InputFormatError(path, None, f"{shape[0]} rows of {shape[1]} {dtype}", "a shorter file")
            hashed = hasher.submit(digest.update, block) if digest is not None else None
            yield block
            if hashed is not None:
                hashed.result()
        if digest is not None:
            while rest := handle.read(1 << 20):  # bytes past the array (open_shard's size check refuses them)
                digest.update(rest)
            if digest.hexdigest() != record[CHECKSUM]:
                raise checksum_mismatch(path)


def _training_sample(opened: list, size: int, seed: int) -> np.ndarray:
    """A seeded sample of rows across all shards, for IVF-PQ's k-means and codebooks."""
    total = sum(len(vectors) for vectors, _, _ in opened)
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(total, size), replace=False))
    rows, offset = [], 0
    for vectors, _, _ in opened:
        local = picks[(picks >= offset) & (picks < offset + len(vectors))] - offset
        rows.append(np.asarray(vectors[local], dtype=np.float32))
        offset += len(vectors)
    return np.concatenate(rows)


def build_index(shard_dirs: list[Path], collection: Path, out: Path, kind: str = "flat", hnsw_m: int = 32,
                ef_construction: int = 200, ef_search: int = 256, nlist: int = 1024, pq_m: int = 48,
                pq_bits: int = 8, nprobe: int = 32, seed: int = 13) -> dict:
    """Build the index from shards (in shard order); returns its manifest."""
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, not {kind!r}")
    # Each shard's ids are kept as their docid lines only: hashed here, written out as they are at the end.
    # Size, shape and dtype checked here; the checksum as the vectors are streamed in (_blocks).
    loaded = sorted(((Path(d), open_shard(d, ids_as_lines=True, checksum=False)) for d in shard_dirs),
                    key=lambda item: item[1][2]["shard"])
    shard_dirs, opened = [directory for directory, _ in loaded], [shard for _, shard in loaded]
    first = opened[0][2]
    for directory, (_, _, manifest) in zip(shard_dirs, opened, strict=True):
        for key in ("model_fingerprint", "dims", "shards"):
            if manifest[key] != first[key]:
                raise InputFormatError(Path(directory) / MANIFEST_FILE, None, f"{key} = {first[key]!r} as in shard 0",
                                       repr(manifest[key]))
    if [m["shard"] for _, _, m in opened] != list(range(first["shards"])):
        raise ValueError(f"expected shards 0..{first['shards'] - 1}, got {[m['shard'] for _, _, m in opened]}")
    count, checksum = sum(len(vectors) for vectors, _, _ in opened), lines_checksum(lines for _, lines, _ in opened)
    # The collection's pids streamed into the checksum: never a list of them beside the ids.
    if lines_checksum(f"{pid}\n".encode() for pid, _ in read_collection(collection)) != checksum:
        raise InputFormatError(collection, None, "embedding ids equal to the collection's pids, in order",
                               f"{count} ids whose checksum differs")
    params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search, "nlist": nlist,
              "pq_m": pq_m, "pq_bits": pq_bits, "nprobe": nprobe}
    if kind == "ivfpq" and count < max(nlist, 2 ** pq_bits):
        raise ValueError(f"IVF-PQ needs at least max(nlist, 2^pq_bits) = {max(nlist, 2 ** pq_bits)} vectors to "
                         f"train, the collection has {count}: lower nlist / pq_bits or use a flat index")
    if kind == "ivfpq" and first["dims"] % pq_m:
        raise ValueError(f"IVF-PQ splits each vector into pq_m = {pq_m} parts: choose pq_m dividing the model's "
                         f"{first['dims']} dimensions")
    index = _empty_index(kind, first["dims"], params)
    if kind == "ivfpq":
        index.train(_training_sample(opened, 64 * nlist, seed))
    flat = None
    if kind == "flat":
        # The flat index's storage allocated once at its final size and filled in place: adding block by
        # block would grow it by doubling, with old and new buffers alive together (up to 3x the vectors).
        index.codes.resize(count * first["dims"] * 4)
        flat = faiss.rev_swig_ptr(index.codes.data(), index.codes.size()).view(np.float32).reshape(-1, first["dims"])
    row = 0
    for directory, (_, _, manifest) in zip(shard_dirs, opened, strict=True):  # in shard order
        for block in _blocks(directory / EMBEDDINGS_FILE, BLOCK if flat is None else FLAT_BLOCK,
                             manifest["files"][EMBEDDINGS_FILE]):
            if flat is None:
                index.add(np.ascontiguousarray(block, dtype=np.float32))
            else:
                flat[row:row + len(block)] = block  # cast to float32 on the way in
            row += len(block)
    if flat is not None:
        index.ntotal = row
    manifest = {key: first[key] for key in ("model", "model_fingerprint", "pooling", "dims")}
    manifest.update({"count": count, "ids_checksum": checksum, "kind": kind, "params": params,
                     "shards": first["shards"], "dtype": "float32"})
    with atomic_directory(out) as staging:
        faiss.write_index(index, str(staging / "index"))
        with atomic_output(staging / "docid", "wb") as handle:
            handle.writelines(lines for _, lines, _ in opened)
        manifest["bytes_per_passage"] = round((staging / "index").stat().st_size / max(count, 1), 1)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


PARAMETERS = {"hnsw_m": 32, "ef_construction": 200, "ef_search": 256, "nlist": 1024, "pq_m": 48, "pq_bits": 8,
              "nprobe": 32}


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """The HNSW and IVF-PQ parameters as --hnsw-m, --ef-search, ... (build_index's defaults)."""
    for name, default in PARAMETERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)


def index_parameters(args: argparse.Namespace) -> dict[str, int]:
    return {name: getattr(args, name) for name in PARAMETERS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, nargs="+", required=True)
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kind", choices=KINDS, default="flat")
    add_index_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    manifest = build_index(args.shards, args.collection, args.out, args.kind, **index_parameters(args))
    log.info("%s index of %d vectors (%d dims) in %s", manifest["kind"], manifest["count"], manifest["dims"], args.out)


if __name__ == "__main__":
    run_stage(main)
