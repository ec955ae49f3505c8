"""build_index's peak RSS against the raw float32 vectors it indexes, at several sizes.

For each size a seeded float16 collection of n x 384 vectors is written as `--shards` embedding
shards (the layout encode_corpus writes; the config's dense.shards is 8) with a collection of
numeric pids, then build_index (flat) runs as its rule runs it: its own process, its own peak RSS
(scale.py's measurement). The same interpreter importing the stage and exiting (--help) is the
floor; (peak - floor) / (n x 384 x 4 bytes) is the stage's memory per byte of index (goal: at most
1.3, at every size).

    python benchmarks/build_index.py [--sizes 200000 500000 1000000] [--shards 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.durable import atomic_output
from pipeline.shards import EMBEDDINGS_FILE, IDS_FILE, MANIFEST_FILE, files_record, ids_checksum, write_ids
from pipeline.timing import cpu_name

sys.path.insert(0, str(Path(__file__).parent))
from scale import label, measure, rss_tool  # benchmarks/ holds scripts, not a package

DIMS = 384  # the packaged MiniLM student's embedding size
CHUNK = 50_000  # rows generated at a time: the generator never holds a whole shard


def write_input(root: Path, size: int, shards: int, seed: int) -> list[Path]:
    """collection.tsv (pid<TAB>text) and `shards` float16 embedding shards partitioning it in order."""
    with atomic_output(root / "collection.tsv") as out:
        for first in range(0, size, CHUNK):
            out.write("".join(f"{pid}\tp\n" for pid in range(first, min(size, first + CHUNK))))
    directories = []
    for shard in range(shards):
        lo, hi = size * shard // shards, size * (shard + 1) // shards
        directory = root / "embeddings" / f"shard-{shard}"
        directory.mkdir(parents=True)
        vectors = np.lib.format.open_memmap(directory / EMBEDDINGS_FILE, mode="w+", dtype=np.float16,
                                            shape=(hi - lo, DIMS))
        for start in range(lo, hi, CHUNK):
            rows = min(CHUNK, hi - start)
            vectors[start - lo:start - lo + rows] = np.random.default_rng([seed, start]).normal(size=(rows, DIMS))
        vectors.flush()
        del vectors
        ids = [str(pid) for pid in range(lo, hi)]
        write_ids(directory / IDS_FILE, ids)
        (directory / MANIFEST_FILE).write_text(json.dumps({
            "model": "random", "model_fingerprint": "random", "pooling": "mean", "dims": DIMS, "dtype": "float16",
            "count": hi - lo, "ids_checksum": ids_checksum(ids), "shard": shard, "shards": shards,
            "files": files_record(directory, [EMBEDDINGS_FILE])}))
        directories.append(directory)
    return directories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 500_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=8, help="embedding shards (the config's dense.shards)")
    parser.add_argument("--threads", type=int, default=2, help="the build_index rule's threads")
    parser.add_argument("--workdir", type=Path, help="an empty or new directory (default: a fresh one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (inputs, indexes, logs)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    if args.workdir and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty (it is deleted at the end unless --keep)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="build-index-bench.", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)

    rows = []
    for size in sorted(args.sizes):
        root = work / f"n{size}"
        root.mkdir()
        shard_dirs = write_input(root, size, args.shards, args.seed)
        build = measure("pipeline.dense.index", ["--shards", *shard_dirs, "--collection", root / "collection.tsv",
                                                  "--out", root / "index", "--kind", "flat"],
                        root / "build.log", args.threads)
        floor = measure("pipeline.dense.index", ["--help"], root / "help.log", args.threads)
        raw_mb = size * DIMS * 4 / 2**20  # the flat index holds float32
        rows.append((size, raw_mb, build, floor))
        print(f"[{label(size)}] peak {build['rss_mb']:.0f} MB, imports {floor['rss_mb']:.0f} MB, "
              f"{build['seconds']:.1f} s", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(root)

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"\nbuild_index (flat), float16 shards of {DIMS} dims in {args.shards} shard(s), {args.threads} threads; "
          f"{cpu_name()} (torch CPU capability {torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, "
          f"{memory / 2**30:.0f} GiB; peak RSS by {rss_tool()}; {datetime.date.today().isoformat()}\n")
    print("| vectors | raw float32 MB | peak RSS MB | imports-only RSS MB | (peak - imports) / raw | wall s |")
    print("|---|---|---|---|---|---|")
    for size, raw_mb, build, floor in rows:
        ratio = (build["rss_mb"] - floor["rss_mb"]) / raw_mb
        print(f"| {size:,} | {raw_mb:.0f} | {build['rss_mb']:.0f} | {floor['rss_mb']:.0f} | {ratio:.2f} | "
              f"{build['seconds']:.1f} |")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
