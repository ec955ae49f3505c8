"""doc2query generation throughput on this CPU, and a projection to MS MARCO's 8.8M passages on GPUs.

Two models sample queries with our top-k decoding loop (pipeline.doc2query.generate.sample_queries):
the demo's small T5 (resources/synthetic/models/doc2query when `make demo` has run, else the same shape
randomly initialised) and a randomly initialised model of t5-base's shape (12+12 layers, 768 wide,
32,128 word pieces: the shape of castorini/doc2query-t5-base-msmarco; weights do not change the cost,
except that an untrained model rarely stops early, which makes its figure an upper bound on time).

Passages are real MS MARCO passages from ../shared/data (synthetic text when absent). The projection
counts the FLOPs of one passage analytically (2 x parameters x tokens for the encoder over the source
and for the decoder and output layer over every generated token of every sample), divides by the
FLOP rate measured here to check the count, and divides the 8.8M-passage total by an A100's bf16
peak at the utilisation given (autoregressive sampling is memory-bound: 10-30% is typical).

    python benchmarks/doc2query_generate.py [--passages 8] [--samples 40] [--utilisation 0.1 0.3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, T5Config, T5ForConditionalGeneration

from pipeline.doc2query.generate import sample_queries
from pipeline.doc2query.model import ScratchT5, load_seq2seq, scratch_t5
from pipeline.formats import read_collection, read_predictions

ROOT = Path(__file__).resolve().parents[1]
MSMARCO_PASSAGES = 8_841_823
A100_BF16_PEAK = 312e12  # FLOP/s, dense (NVIDIA's A100 datasheet)
DEMO_MODEL = ROOT / "resources" / "synthetic" / "models" / "doc2query"


def passages(count: int) -> list[str]:
    collection = ROOT.parent / "shared" / "data" / "msmarco-dl-mini" / "collection.tsv"
    if collection.exists():
        texts = []
        for _, text in read_collection(collection):
            texts.append(text)
            if len(texts) == count:
                return texts
    return [f"passage {i} about the history of river trade and the ports along the coast " * 5 for i in range(count)]


def real_query_tokens(tokenizer) -> float | None:
    """Mean word pieces (+ eos) of the published doc2query-T5 predictions in ../shared/data, if present."""
    sample = ROOT.parent / "shared" / "data" / "msmarco-samples" / "doc2query-t5.sample.jsonl"
    if not sample.exists():
        return None
    queries = [query for _, predicted in read_predictions(sample) for query in predicted]
    return sum(len(tokenizer(q, add_special_tokens=False)["input_ids"]) + 1 for q in queries) / len(queries)


def flops_per_passage(model: PreTrainedModel, source_tokens: float, samples: int, target_tokens: float) -> float:
    """Forward FLOPs for one passage: encoder over its tokens, decoder + output layer per generated token."""
    config = model.config
    embedding = config.vocab_size * config.d_model
    encoder = sum(p.numel() for p in model.get_encoder().parameters()) - embedding
    decoder = sum(p.numel() for p in model.get_decoder().parameters()) - embedding
    return 2 * encoder * source_tokens + 2 * (decoder + embedding) * samples * target_tokens


def measure(name: str, model: PreTrainedModel, tokenizer, texts: list[str], samples: int, max_source: int,
            max_target: int, batch_size: int) -> dict:
    model.eval()
    started = time.perf_counter()
    generated = 0
    with torch.inference_mode():
        sample_queries(model, tokenizer, texts[:1], 2, 10, max_source, max_target)  # warm-up
        started = time.perf_counter()
        for start in range(0, len(texts), batch_size):
            torch.manual_seed(start)
            batch = sample_queries(model, tokenizer, texts[start:start + batch_size], samples, 10, max_source,
                                   max_target)
            generated += sum(len(tokenizer(query, add_special_tokens=False)["input_ids"]) + 1
                             for queries in batch for query in queries)
    seconds = time.perf_counter() - started
    source = sum(min(len(ids), max_source) for ids in tokenizer(texts)["input_ids"]) / len(texts)
    target = min(generated / (len(texts) * samples), max_target)
    flops = flops_per_passage(model, source, samples, target)
    return {"model": name, "passages_per_s": len(texts) / seconds, "source_tokens": source, "target_tokens": target,
            "gflop_per_passage": flops / 1e9, "cpu_gflops": flops * len(texts) / seconds / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--samples", type=int, default=40, help="queries per passage for t5-base (docTTTTTquery: 40)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--utilisation", type=float, nargs="+", default=[0.1, 0.3])
    args = parser.parse_args()
    texts = passages(args.passages)
    torch.manual_seed(0)
    if DEMO_MODEL.is_dir():
        demo, demo_tokenizer = load_seq2seq(str(DEMO_MODEL))
    else:
        demo, demo_tokenizer = scratch_t5(size=ScratchT5())
    # The demo's settings (profiles/demo/workflow.yaml): 5 samples, 104 source and 16 target tokens.
    rows = [measure("demo T5 (256 wide, 2+2 layers), 5 samples", demo, demo_tokenizer, texts * 4, 5, 104, 16, 32)]
    # t5-base's shape over the demo's WordPiece vocabulary (30,522 pieces instead of T5's 32,128: the output
    # layer's FLOPs differ by 5%), so that sampled ids decode.
    pad, eos = demo_tokenizer.pad_token_id, demo_tokenizer.sep_token_id
    base = T5ForConditionalGeneration(T5Config(vocab_size=len(demo_tokenizer), d_model=768, d_kv=64, d_ff=3072,
                                               num_layers=12, num_decoder_layers=12, num_heads=12,
                                               decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=eos))
    rows.append(measure(f"t5-base shape, {args.samples} samples", base, demo_tokenizer, texts, args.samples, 512, 64,
                        args.batch_size))
    print(f"\nCPU: {torch.get_num_threads()} threads; passages from "
          f"{'../shared/data/msmarco-dl-mini' if 'passage 0 about' not in texts[0] else 'synthetic text'}\n")
    print("| model | passages/s (CPU) | source tokens | generated tokens/query | GFLOP/passage | CPU GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['passages_per_s']:.2f} | {row['source_tokens']:.0f} | "
              f"{row['target_tokens']:.1f} | {row['gflop_per_passage']:.1f} | {row['cpu_gflops']:.1f} |")
    base_row = rows[-1]
    # A trained model stops at eos: project with the length of real doc2query-T5 predictions, not the 64
    # tokens an untrained model runs to.
    target = real_query_tokens(demo_tokenizer) or base_row["target_tokens"]
    total = flops_per_passage(base, base_row["source_tokens"], args.samples, target) * MSMARCO_PASSAGES
    cpu_hours = total / (base_row["cpu_gflops"] * 1e9) / 3600
    print(f"\n8.8M passages x {args.samples} samples with t5-base, {base_row['source_tokens']:.0f} source tokens, "
          f"{target:.1f} tokens per query (eos included; real predictions): {total / 1e18:.1f} EFLOP, "
          f"{cpu_hours:,.0f} hours at the FLOP rate measured on this CPU.")
    for share in args.utilisation:
        print(f"- one A100 at {share:.0%} of its bf16 peak: {total / (A100_BF16_PEAK * share) / 3600:,.0f} GPU-hours")


if __name__ == "__main__":
    main()
