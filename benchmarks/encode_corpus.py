"""Corpus encoding: our encode_corpus vs pyserini's TctColBertDocumentEncoder, same passages, same precision.

2,000 real MS MARCO passages (../shared/data/msmarco-dl-mini), the packaged MiniLM saved as a
student, passage length 154 (150 + 4) for both, same torch threads, one process. Both run in
fp32 for the like-for-like ratio (ours: length-sorted batches, each padded to its own longest;
pyserini: its own loop in collection order, padded to each batch's longest); ours then runs once
more with `precision: auto` as resolved on this machine. Prints the CPU capability, passages/s,
the ratios and the cosine agreement with pyserini's vectors.

    python benchmarks/encode_corpus.py [--passages 2000] [--batch-size 64]

(build_index's memory is measured by benchmarks/build_index.py.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import precision
from pipeline.dense.encode import encode_corpus
from pipeline.formats import read_collection, write_id_text
from pipeline.models.backbone import PACKAGED_MINILM
from pipeline.models.biencoder import BiEncoder
from pipeline.shards import open_shard
from pipeline.sparse.jvm import import_pyserini
from pipeline.timing import cpu_name


def cosines(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[2] / "shared" / "data" / "msmarco-dl-mini" / "collection.tsv"
    passages = [pair for _, pair in zip(range(args.passages), read_collection(source), strict=False)]
    work = Path(tempfile.mkdtemp(prefix="encode-bench."))
    write_id_text(work / "collection.tsv", passages)
    BiEncoder.from_backbone(PACKAGED_MINILM).save(work / "model")
    auto = precision.resolve("auto", torch.device("cpu"))

    def ours(requested: str) -> tuple[float, np.ndarray]:
        tick = time.perf_counter()
        encode_corpus(str(work / "model"), work / "collection.tsv", work / requested, dtype="float32",
                      batch_size=args.batch_size, precision=requested)
        rate = len(passages) / (time.perf_counter() - tick)
        return rate, open_shard(work / requested)[0]

    encode = import_pyserini("pyserini.encode")
    encoder = encode.TctColBertDocumentEncoder(str(work / "model"), device="cpu")
    texts = [text for _, text in passages]
    tick = time.perf_counter()
    with torch.inference_mode():
        theirs = np.concatenate([encoder.encode(texts[i:i + args.batch_size], max_length=154)
                                 for i in range(0, len(texts), args.batch_size)])
    theirs_rate = len(passages) / (time.perf_counter() - tick)
    fp32_rate, fp32_vectors = ours("fp32")
    auto_rate, auto_vectors = ours("auto")

    print(f"\n{len(passages)} MS MARCO passages, MiniLM, max length 154, batch {args.batch_size}; {cpu_name()}; "
          f"PyTorch CPU capability {precision.cpu_capability()}, native bf16: {precision.cpu_native_bf16()}; "
          f"{torch.get_num_threads()} threads\n")
    print("| encoder | precision | passages/s | ratio vs pyserini | 1 - min cosine to pyserini |")
    print("|---|---|---|---|---|")
    print(f"| pyserini TctColBertDocumentEncoder (collection order) | fp32 | {theirs_rate:.1f} | 1.00x | |")
    for label, resolved, rate, vectors in (("ours: encode_corpus", "fp32", fp32_rate, fp32_vectors),
                                           ("ours: encode_corpus, precision auto", auto, auto_rate, auto_vectors)):
        print(f"| {label} | {resolved} | {rate:.1f} | {rate / theirs_rate:.2f}x | "
              f"{1 - cosines(vectors, theirs).min():.2e} |")


if __name__ == "__main__":
    main()
