"""Resource plan for the paper's scale (MS MARCO passage, bert-base-uncased): GPU-hours, disk and memory.

Measured here: word pieces per real MS MARCO passage and query (../shared/data, the uncased vocabulary
bert-base shares with the packaged MiniLM), and the FLOP rate this CPU reaches running a randomly
initialised bert-base encoder (the FLOP count below, divided by the measured seconds: a check that
the count describes the work). Stated: FLOP counts (2 x non-embedding parameters per token forward,
3x that for forward + backward), the paper's step counts and batch sizes (config.yaml), GPU peaks from
the vendors' datasheets (A100 312, H100 SXM 989 dense bf16 TFLOP/s) and the utilisation assumed for
each kind of work. BM25 (CPU) is projected from this machine's scale run (benchmarks/scale.json) in
proportion to the bytes of real MS MARCO text; Table 5's fusion stages (CPU) come from benchmarks/fusion_methods.json,
measured at MS MARCO dev's size. Prints the Markdown table of docs/scale.md's resource plan.

Its last rows are one hard-negative round of TCT-ColBERT v2 (HN; HN+ adds the teacher): the corpus
encoded with the round's model, MS MARCO's 502,939 judged train queries encoded and searched (flat,
fp16 on GPU with faiss-gpu, top 200), negatives mined from that run (measured here: pipeline.data.negatives
on a synthetic run of MS MARCO-like ids, scaled by lines), for HN+ the teacher re-trained from the first
(160k x 96, config.yaml), and the round's student. Mining's memory is stated from one measurement on this
machine: 0.54 GB at 40k queries x 200, nearly all pids new; at 0.5M queries the ~100M hits kept are lists of
interned pids, of which MS MARCO has 8.8M: about 2 GB.

    python benchmarks/resource_plan.py [--gpus 8] [--train-utilisation 0.4] [--infer-utilisation 0.4]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoTokenizer, BertConfig, BertModel

from pipeline import precision
from pipeline.formats import read_collection
from pipeline.models.backbone import PACKAGED_MINILM, resolve_backbone

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PASSAGES, DEV_QUERIES = 8_841_823, 6_980
TRAIN_QUERIES, HN_DEPTH = 502_939, 200  # MS MARCO's judged train queries; TCT-ColBERT v2 mines their top 200
GPUS = {"A100": 312e12, "H100": 989e12}  # dense bf16 FLOP/s
CPU_PRECISION = precision.resolve("auto", torch.device("cpu"))
PREFIX = 4  # '[CLS] [D] ' / '[CLS] [Q] ' of the TCT conventions


def mean_tokens(tokenizer, texts: list[str], cap: int) -> float:
    return sum(min(len(ids) + PREFIX, cap) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) / len(
        texts)


def measured_lengths(tokenizer) -> tuple[float, float]:
    """Mean passage (capped at 154) and query (36, [MASK]-padded: always 36) lengths in word pieces."""
    collection = SHARED / "msmarco-dl-mini" / "collection.tsv"
    if not collection.exists():
        return 80.0, 36.0  # typical MS MARCO figures when the real data is absent
    texts = [text for _, (_, text) in zip(range(5000), read_collection(collection), strict=False)]
    return mean_tokens(tokenizer, texts, 154), 36.0


def passage_bytes() -> float:
    """Mean bytes per line of the real MS MARCO collection file (pid, tab, text, newline)."""
    collection = SHARED / "msmarco-dl-mini" / "collection.tsv"
    if not collection.exists():
        return 335.0  # 2.96 GB / 8.84M lines, the official collection.tsv
    sizes = [len(line) for _, line in zip(range(20000), collection.open("rb"), strict=False)]
    return sum(sizes) / len(sizes)


def measured_bm25(line_bytes: float) -> list[tuple[str, float, str]]:
    """BM25 index and search at MS MARCO's size, projected from benchmarks/scale.json (this machine's
    measured wall time on its largest collection) in proportion to the bytes of text indexed or searched."""
    scale = Path(__file__).with_name("scale.json")
    if not scale.exists():
        return []
    record = json.loads(scale.read_text())
    largest = max(record["sizes"], key=lambda size: size["size"])
    threads = int(record["settings"]["threads"])
    factor = PASSAGES * line_bytes / largest["collection_bytes"]
    index, search = largest["stages"]["bm25_index"], largest["stages"]["bm25_run"]
    queries = int(record["settings"]["queries"])
    return [
        ("bm25_index (Lucene, 8.8M passages)", index["seconds"] * factor * threads / 3600,
         f"{threads} threads measured at {largest['size']:,} passages"),
        ("bm25_run, dev (6,980 queries, 1000 hits)",
         search["seconds"] * factor * DEV_QUERIES / queries * threads / 3600,
         f"an upper bound: {search['seconds']:.0f} s for {queries:,} queries at {largest['size']:,} passages, "
         "JVM start-up and the single-query latency loop included, scaled linearly"),
    ]


def measured_fusion_methods() -> list[tuple[str, float, str, str]]:
    """Table 5's stages at MS MARCO's size from benchmarks/fusion_methods.json (this machine, 6,980 queries x two
    1000-deep runs): (stage, core hours for every hybrid of the paper DAG, disk, memory)."""
    measured = Path(__file__).with_name("fusion_methods.json")
    if not measured.exists():
        return []
    record = json.loads(measured.read_text())
    config = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath("config.yaml").read_text())
    hybrids = sum("+" in row["run"] for row in config["table1"]["rows"].values())
    tuning_share = record["tuning_queries"] / record["queries"]
    tune = record["read_two_runs_seconds"] * tuning_share + record["sweeps_seconds"]
    fuse = record["read_two_runs_seconds"] + record["five_fuses_seconds"] + 5 * record["write_one_run_seconds"]
    memory = f"{record['peak_rss_mb'] / 1e3:.1f} GB RAM measured"
    return [
        (f"tune_fusion_methods, {hybrids} hybrids (rrf's and rbp's sweeps, {record['tuning_queries']:,} queries)",
         hybrids * tune / 3600, "-", f"{memory}; {tune:.0f} s per hybrid"),
        (f"fuse_methods, dev, {hybrids} hybrids x 5 methods ({record['queries']:,} queries)", hybrids * fuse / 3600,
         f"{hybrids * 5 * record['fused_run_bytes'] / 1e9:.1f} GB", f"{memory}; {fuse:.0f} s per hybrid"),
    ]


def cpu_flop_rate(tokens: int, batch: int = 16) -> tuple[float, int]:
    """FLOP/s this CPU reaches in bert-base inference (in the precision `auto` resolves to here), by the count
    used below."""
    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()
    dense = non_embedding_parameters(model)
    ids = torch.randint(1000, 20000, (batch, tokens))
    with torch.inference_mode(), precision.autocast(torch.device("cpu"), CPU_PRECISION):
        model(input_ids=ids)
        started = time.perf_counter()
        for _ in range(3):
            model(input_ids=ids)
    seconds = (time.perf_counter() - started) / 3
    return 2 * dense * batch * tokens / seconds, dense


def gemm_rate() -> float:
    """FLOP/s of a float32 matrix product on this CPU: the operation Faiss's flat search runs."""
    rng = np.random.default_rng(0)
    queries, passages = rng.random((1024, 768), dtype=np.float32), rng.random((768, 16384), dtype=np.float32)
    queries @ passages
    started = time.perf_counter()
    for _ in range(3):
        queries @ passages
    return 2 * 1024 * 768 * 16384 * 3 / (time.perf_counter() - started)


def mining_rate(queries: int = 2_000) -> tuple[float, float]:
    """(run lines per second mine_negatives reads on one core, bytes per run line), on a synthetic run of
    `queries` x HN_DEPTH hits with MS MARCO-sized ids, one positive per query."""
    from pipeline.data.negatives import mine_negatives

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        run, qrels = Path(tmp) / "run.trec", Path(tmp) / "qrels.txt"
        with open(run, "w") as out, open(qrels, "w") as judged:
            for i in range(queries):
                pids = rng.sample(range(PASSAGES), HN_DEPTH)
                out.writelines(f"{1_000_000 + 3 * i} Q0 {pid} {rank} {90 - rank / 20:.6f} tct_inbatch\n"
                               for rank, pid in enumerate(pids, start=1))
                judged.write(f"{1_000_000 + 3 * i} 0 {pids[rng.randrange(50)]} 1\n")
        started = time.perf_counter()
        mine_negatives(run, qrels, Path(tmp) / "triples.tsv", depth=HN_DEPTH)
        lines = queries * HN_DEPTH
        return lines / (time.perf_counter() - started), run.stat().st_size / lines


def non_embedding_parameters(model: BertModel) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embeddings"))


def hours(value: float) -> str:
    """Hours with two significant figures; under an hour in minutes, so that short stages do not print as 0."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2g}"
    return f"{value * 60:.2g} min" if value * 60 >= 0.1 else "< 0.1 min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the SLURM column")
    parser.add_argument("--train-utilisation", type=float, default=0.4, help="share of peak in training")
    parser.add_argument("--infer-utilisation", type=float, default=0.4, help="share of peak in batch encoding")
    parser.add_argument("--scaling", type=float, default=0.9, help="DDP efficiency per added GPU (training)")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(PACKAGED_MINILM))
    passage, query = measured_lengths(tokenizer)
    rate, dense = cpu_flop_rate(int(passage))
    forward = 2 * dense  # FLOP per token, forward
    student_step = 96 * (query + 2 * passage) * (3 * forward + forward)  # student fwd+bwd, teacher fwd
    teacher_step = 96 * (query + 2 * passage) * 3 * forward  # the paper's batch for both steps (Section 4)
    stages = [  # name, FLOP, kind (train / infer / search / cpu), disk bytes, memory note
        ("train_teacher (ColBERT, 160k x 96)", 160_000 * teacher_step, "train", 0.44e9,
         "1 GPU, ~30 GB at batch 96 (bf16)"),
        ("train_student, each of 3 (160k x 96, teacher in the step)", 160_000 * student_step, "train", 0.44e9,
         "1 GPU, ~30 GB at batch 96 (bf16)"),
        ("encode_corpus (8.8M passages)", PASSAGES * passage * forward, "infer", PASSAGES * 768 * 2,
         "per shard job: its vectors + one batch"),
        ("encode_tokens (ColBERT token index)", PASSAGES * passage * forward, "infer", PASSAGES * passage * 128 * 2,
         "per shard job: its token vectors"),
        ("build_index (flat, float32)", 0, "cpu", PASSAGES * 768 * 4, f"{PASSAGES * 768 * 4 / 1e9:.0f} GB RAM"),
        ("dense_run, dev (6,980 queries, flat)", DEV_QUERIES * PASSAGES * 768 * 2, "search", 0,
         f"index in RAM, or {PASSAGES * 768 * 2 / 1e9:.1f} GB on GPU (fp16)"),
        ("colbert_rerank, dev (1000 candidates)", DEV_QUERIES * 1000 * query * passage * 128 * 2, "infer", 0,
         f"bound by reading {1000 * passage * 128 * 2 / 1e6:.0f} MB of token vectors per query from the "
         "memory-mapped token index, not by FLOPs"),
    ]
    search_rate = gemm_rate()
    print(f"\nMeasured: {passage:.1f} word pieces per MS MARCO passage (capped at 154, prefix included), queries "
          f"{query:.0f}; bert-base has {dense / 1e6:.0f}M non-embedding parameters; this CPU ran its encoder at "
          f"{rate / 1e9:.0f} GFLOP/s ({CPU_PRECISION}: precision auto on this CPU, PyTorch capability "
          f"{precision.cpu_capability()}; {torch.get_num_threads()} threads) and float32 matrix products "
          f"(Faiss's flat search) at {search_rate / 1e9:.0f} GFLOP/s.")
    print(f"Assumed: training at {args.train_utilisation:.0%} and batch inference at {args.infer_utilisation:.0%} of "
          f"the bf16 peak; {args.gpus} GPUs scale training at {args.scaling:.0%} efficiency.\n")
    header = ["stage", "TFLOP", "this CPU (h)", *(f"1x {g} (h)" for g in GPUS),
              *(f"{args.gpus}x {g} wall (h)" for g in GPUS), "disk", "memory"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    def row(name: str, flops: float, kind: str, disk: float, memory: str) -> list[float]:
        """Print one stage; returns its hours: 1x, then wall on args.gpus, of each GPU (for the round's total)."""
        share = args.train_utilisation if kind == "train" else args.infer_utilisation
        one = [flops / (peak * share) / 3600 for peak in GPUS.values()]
        speedup = args.gpus * args.scaling if kind == "train" else args.gpus
        cpu_rate = search_rate if kind == "search" else rate
        cells = [name, f"{flops / 1e12:,.0f}", hours(flops / cpu_rate / 3600) if flops else "-",
                 *(hours(h) if flops else "-" for h in one), *(hours(h / speedup) if flops else "-" for h in one),
                 f"{disk / 1e9:.1f} GB" if disk else "-", memory]
        print("| " + " | ".join(cells) + " |")
        return [*one, *(h / speedup for h in one)]

    for stage in stages:
        row(*stage)
    for name, core_hours, how in measured_bm25(passage_bytes()):
        cells = [name, "-", f"{hours(core_hours)} (core)", *("-" for _ in GPUS), *("-" for _ in GPUS), "-", how]
        print("| " + " | ".join(cells) + " |")
    for name, core_hours, disk, how in measured_fusion_methods():
        cells = [name, "-", f"{hours(core_hours)} (core)", *("-" for _ in GPUS), *("-" for _ in GPUS), disk, how]
        print("| " + " | ".join(cells) + " |")

    # One hard-negative round (TCT-ColBERT v2's HN; HN+ adds the teacher re-trained on the mined negatives).
    lines_per_second, line_bytes = mining_rate()
    hits = TRAIN_QUERIES * HN_DEPTH
    round_stages = [
        ("HN round: encode_corpus again (8.8M passages, the round's model)", PASSAGES * passage * forward, "infer",
         PASSAGES * 768 * 2, "per shard job: its vectors + one batch; the mining model's, unless already encoded, "
         "and the round's student's for evaluation"),
        (f"HN round: encode_train_queries ({TRAIN_QUERIES:,} judged queries)", TRAIN_QUERIES * query * forward, "infer",
         TRAIN_QUERIES * 768 * 4, "one batch"),
        (f"HN round: dense_run, train ({TRAIN_QUERIES:,} queries, flat, faiss-gpu, top {HN_DEPTH})",
         TRAIN_QUERIES * PASSAGES * 768 * 2, "search", hits * line_bytes,
         f"{PASSAGES * 768 * 2 / 1e9:.1f} GB index on each GPU (fp16), queries in batches; FLOPs only: the top-"
         f"{HN_DEPTH} selection over {TRAIN_QUERIES * PASSAGES / 1e12:.1f}e12 scores is memory-bound and may add "
         "as much again; disk: the run"),
    ]
    totals = [row(*stage) for stage in round_stages]
    cells = [f"HN round: mine_negatives (top {HN_DEPTH} of {hits / 1e6:.0f}M run lines)", "-",
             f"{hours(hits / lines_per_second / 3600)} (core)", *("-" for _ in GPUS), *("-" for _ in GPUS),
             f"{TRAIN_QUERIES * 1.06 * 4 * 24 / 1e9:.2f} GB",
             f"~2 GB RAM; measured {lines_per_second / 1e3:.0f}k lines/s on one core here; "
             "~2.1M triples at 4 per positive"]
    print("| " + " | ".join(cells) + " |")
    hn_plus = row("HN+ only: train_teacher again, from the first teacher (160k x 96)", 160_000 * teacher_step,
                  "train", 0.44e9, "1 GPU, ~30 GB at batch 96 (bf16)")
    totals.append(row("HN round: train_student on the mined triples (160k x 96, teacher in the step)",
                      160_000 * student_step, "train", 0.44e9, "1 GPU, ~30 GB at batch 96 (bf16)"))
    for name, parts in (("HN round, total (GPU stages; mining on CPU)", totals),
                        ("HN+ round, total (GPU stages; mining on CPU)", [*totals, hn_plus])):
        summed = [sum(column) for column in zip(*parts, strict=True)]
        print("| " + " | ".join([name, "-", "-", *(hours(h) for h in summed), "-", "-"]) + " |")


if __name__ == "__main__":
    main()
