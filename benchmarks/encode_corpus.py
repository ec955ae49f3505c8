"""Corpus encoding: our encode_corpus vs pyserini's TctColBertDocumentEncoder, same passages.

2,000 real MS MARCO passages (../shared/data/msmarco-dl-mini), the packaged MiniLM saved as a
student, passage length 154 (150 + 4) for both, same torch threads, one process. Ours runs
length-sorted batches under bf16 autocast; pyserini runs its own loop in fp32 in collection
order. Prints passages/s, the ratio and the cosine agreement of the two sets of embeddings; then
peak RSS of build_index over 200k x 384 float16 vectors against their raw size.

    python benchmarks/encode_corpus.py [--passages 2000] [--batch-size 64] [--index-vectors 200000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.dense.encode import encode_corpus
from pipeline.io import open_shard, read_collection, write_id_text
from pipeline.models.backbone import PACKAGED_MINILM
from pipeline.models.biencoder import BiEncoder
from pipeline.sparse.jvm import import_pyserini

sys.path.insert(0, str(Path(__file__).parent))
from scale import measure  # benchmarks/ holds scripts, not a package

INDEX_SCRIPT = """
import sys, numpy as np, json, pathlib
from pipeline.io import write_ids, ids_checksum
root = pathlib.Path(sys.argv[1]); n, d = int(sys.argv[2]), 384
ids = [str(i) for i in range(n)]
(root / "collection.tsv").write_text("".join(f"{i}\\tp\\n" for i in ids))
shard = root / "shard-0"; shard.mkdir()
vectors = np.lib.format.open_memmap(shard / "emb.npy", mode="w+", dtype="float16", shape=(n, d))
for start in range(0, n, 50000):
    vectors[start:start + 50000] = np.random.default_rng(start).normal(size=(min(50000, n - start), d))
vectors.flush(); del vectors
write_ids(shard / "ids.parquet", ids)
(shard / "manifest.json").write_text(json.dumps({"model": "x", "model_fingerprint": "x", "pooling": "mean",
    "dims": d, "dtype": "float16", "count": n, "ids_checksum": ids_checksum(ids), "shard": 0, "shards": 1}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--index-vectors", type=int, default=200_000)
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco-dl-mini" / "collection.tsv"
    passages = [pair for _, pair in zip(range(args.passages), read_collection(source), strict=False)]
    work = Path(tempfile.mkdtemp(prefix="encode-bench."))
    write_id_text(work / "collection.tsv", passages)
    BiEncoder.from_backbone(PACKAGED_MINILM).save(work / "model")

    tick = time.perf_counter()
    encode_corpus(str(work / "model"), work / "collection.tsv", work / "ours", dtype="float32",
                  batch_size=args.batch_size, bf16=True)
    ours_rate = len(passages) / (time.perf_counter() - tick)
    ours, _, _ = open_shard(work / "ours")

    encode = import_pyserini("pyserini.encode")
    encoder = encode.TctColBertDocumentEncoder(str(work / "model"), device="cpu")
    texts = [text for _, text in passages]
    tick = time.perf_counter()
    with torch.no_grad():
        theirs = np.concatenate([encoder.encode(texts[i:i + args.batch_size], max_length=154)
                                 for i in range(0, len(texts), args.batch_size)])
    theirs_rate = len(passages) / (time.perf_counter() - tick)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)

    # build_index as its rule runs it: its own process, its own peak RSS (scale.py's measurement), against the
    # same interpreter importing the stage and exiting (--help): what is left is the index's own memory.
    subprocess.run([sys.executable, "-c", INDEX_SCRIPT, str(work), str(args.index_vectors)], check=True)
    build = measure("pipeline.dense.index", ["--shards", work / "shard-0", "--collection", work / "collection.tsv",
                                              "--out", work / "index", "--kind", "flat"], work / "build.log", 2)
    floor = measure("pipeline.dense.index", ["--help"], work / "help.log", 2)
    raw_mb = args.index_vectors * 384 * 4 / 2**20  # the flat index holds float32
    print(f"\n{len(passages)} MS MARCO passages, MiniLM, max length 154, {torch.get_num_threads()} threads\n")
    print("| encoder | passages/s | ratio |")
    print("|---|---|---|")
    print(f"| ours: encode_corpus (length-sorted, bf16 autocast) | {ours_rate:.1f} | {ours_rate / theirs_rate:.2f}x |")
    print(f"| pyserini TctColBertDocumentEncoder (fp32) | {theirs_rate:.1f} | 1.00x |")
    print(f"\ncosine(ours, pyserini): min {cosine.min():.5f}, mean {cosine.mean():.6f}")
    print(f"build_index, {args.index_vectors} x 384 float16 shard: peak RSS {build['rss_mb']:.0f} MB in "
          f"{build['seconds']:.1f} s; the same process importing the stage and exiting: {floor['rss_mb']:.0f} MB; "
          f"float32 vectors {raw_mb:.0f} MB; "
          f"(peak - imports) / raw = {(build['rss_mb'] - floor['rss_mb']) / raw_mb:.2f}")


if __name__ == "__main__":
    main()
