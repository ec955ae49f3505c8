"""A prepared check of the GPU code paths, which so far have only run on CPUs (`make check-gpu`).

    .venv/bin/python benchmarks/check_gpu.py [--workdir DIR]

On a small seeded synthetic dataset (made offline in a temporary directory) with the packaged MiniLM,
on the current CUDA GPU, through the stages' own functions: precision `auto` resolves to bf16 on a GPU
with bf16 units, else fp16; the teacher and an in-batch student (online teacher) train 20 steps each
with it (finite losses and weights, that precision in the loss log); a student trains 8 steps in fp16
with the GradScaler (its scale checkpointed, not every step skipped on overflow); the student encodes
the corpus (precision auto) into a flat index; faiss-gpu searches it in float32, float16 and float16 in
3 slices, each agreeing with the CPU's flat search on >= 99% of the top 10 (mean over queries).

Prints a Markdown table and exits 1 if any check failed; without a CUDA GPU it says so and exits 0.
About a minute on one GPU (the budget is 5).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import random
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import faiss
import numpy as np
import torch
from safetensors.torch import load_file

from pipeline import precision
from pipeline.data.prepare import prepare_data
from pipeline.data.synthetic import synthetic_source
from pipeline.dense.encode import encode_corpus
from pipeline.dense.index import build_index
from pipeline.dense.queries import encode_queries
from pipeline.dense.search import dense_search
from pipeline.formats import read_run
from pipeline.models.backbone import PACKAGED_MINILM, Conventions
from pipeline.shards import EMBEDDINGS_FILE
from pipeline.timing import cpu_name
from pipeline.train.context import Context
from pipeline.train.loop import LoopConfig
from pipeline.train.student import train_student
from pipeline.train.teacher import train_teacher

NO_GPU = "No CUDA GPU (torch.cuda.is_available() is False): nothing was checked."
K, MIN_OVERLAP = 10, 0.99
CONV = Conventions(doc_length=104)  # the demo's: synthetic passages are short
PRECISION, DATA, TEACHER, STUDENT, FP16, ENCODE = (
    "precision auto", "synthetic data", "train teacher, auto", "train student inbatch, auto",
    "train student fp16 + GradScaler", "encode corpus auto, flat index")


class CheckFailed(Exception):
    """A checked condition did not hold (raised rather than `assert`, which `python -O` removes)."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What runs where: the GPU check's sizes by default; the tests shrink them and use the CPU."""

    device: torch.device  # training; encode_corpus takes the GPU by itself whenever there is one
    search_device: str = "gpu"  # Faiss's device: gpu here, cpu in the tests
    backbone: str = PACKAGED_MINILM
    passages: int = 2000
    train_queries: int = 400
    dev_queries: int = 200
    steps: int = 20
    fp16_steps: int = 8
    batch_size: int = 16
    seed: int = 13


class Result(NamedTuple):
    name: str
    result: str  # pass, FAIL, or skipped (a check it needs failed)
    detail: str


def make_dataset(plan: Plan, out: Path) -> str:
    """The synthetic demo data with random negatives: it has no official triples, and mining BM25 ones
    would need the JVM, which has nothing to do with the GPU."""
    source = synthetic_source(plan.seed, plan.passages, plan.train_queries, plan.dev_queries, n_dl=0)
    pids = [pid for pid, _ in source.collection()]

    def triples() -> Iterator[tuple[str, str, str]]:
        rng = random.Random(plan.seed)
        for qid, judged in source.splits["train"].qrels.items():
            for positive in judged:
                yield qid, positive, rng.choice([pid for pid in pids if pid not in judged])

    manifest = prepare_data(dataclasses.replace(source, triples=triples, triples_origin="random negatives"), out,
                            ["train", "dev"])
    return f"{manifest['collection']} passages, {manifest['triples']} triples, {plan.dev_queries} dev queries"


def expected_auto(device: torch.device) -> str:
    """What `auto` must mean on a GPU, restated independently (the CPU's rules are tested in test_precision)."""
    if device.type == "cuda":
        return "bf16" if precision.cuda_bf16() else "fp16"
    return precision.resolve("auto", device)


def check_precision(plan: Plan) -> str:
    resolved, expected = precision.resolve("auto", plan.device), expected_auto(plan.device)
    require(resolved == expected, f"auto resolved to {resolved}, not {expected}")
    units = f"bf16 units: {precision.cuda_bf16()}" if plan.device.type == "cuda" else "on the CPU"
    return f"{resolved} ({units})"


def check_training(plan: Plan, data: Path, work: Path, name: str, steps: int, requested: str) -> str:
    """Train `name` (the teacher, else an in-batch student of it) through its stage function and check its logs."""
    resolved = precision.resolve(requested, plan.device)
    inputs = (data / "triples.train.tsv", data / "queries.train.tsv", data / "collection.tsv")
    outputs = (work / name, work / f"ck-{name}", work / f"{name}.losses.csv")
    cfg = LoopConfig(steps=steps, batch_size=plan.batch_size, lr=3e-5, warmup_steps=2, precision=requested,
                     seed=plan.seed, checkpoint_every=steps)
    if name == "teacher":
        train_teacher(plan.backbone, *inputs, *outputs, cfg, CONV, ctx=Context(plan.device))
    else:
        train_student(work / "teacher", *inputs, *outputs, cfg, condition="inbatch", ctx=Context(plan.device))
    with open(outputs[2], newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(row["loss"]) for row in rows]
    require(len(rows) == steps, f"{len(rows)} loss rows for {steps} steps")
    require(all(map(math.isfinite, losses)), f"non-finite losses {losses}")
    logged = {row["precision"] for row in rows}
    require(logged == {resolved}, f"the loss log records precision {sorted(logged)}, not {resolved}")
    weights = [tensor for path in outputs[0].glob("*.safetensors") for tensor in load_file(path).values()]
    require(bool(weights) and all(torch.isfinite(t).all() for t in weights), f"non-finite weights in {outputs[0]}")
    seconds = statistics.median(float(row["seconds"]) for row in rows)
    return f"{resolved}, {steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, {seconds:.3f} s/step"


def check_fp16(plan: Plan, data: Path, work: Path) -> str:
    detail = check_training(plan, data, work, "student-fp16", plan.fp16_steps, "fp16")
    checkpoint = max((work / "ck-student-fp16").glob("step-*.pt"))
    scaler = torch.load(checkpoint, map_location="cpu", weights_only=False)["scaler"]
    require(scaler.get("scale", 0) > 0, f"{checkpoint.name} holds no loss scale: {scaler}")
    # The scale starts at 2^16 and halves at each overflowing step, which is skipped (it grows only after 2000).
    skipped = round(math.log2(2.0 ** 16 / scaler["scale"]))
    require(skipped < plan.fp16_steps, f"all {plan.fp16_steps} steps overflowed (scale {scaler['scale']:g})")
    return f"{detail}; scale {scaler['scale']:g} ({skipped} of {plan.fp16_steps} steps skipped on overflow)"


def check_encoding(plan: Plan, data: Path, work: Path) -> str:
    student, shard = str(work / "student"), work / "embeddings" / "shard-0"
    manifest = encode_corpus(student, data / "collection.tsv", shard, precision="auto")
    require(manifest["precision"] == expected_auto(plan.device), f"encoded in {manifest['precision']}")
    require(bool(np.isfinite(np.load(shard / EMBEDDINGS_FILE)).all()), "non-finite passage vectors")
    index = build_index([shard], data / "collection.tsv", work / "index")
    encode_queries(student, [data / "queries.dev.tsv"], [work / "queries"], precision="auto", latency_queries=20)
    return (f"{manifest['precision']}, {manifest['count']} passages at {manifest['passages_per_second']}/s; "
            f"flat index of {index['count']} x {index['dims']}")


def top_k_overlap(reference: dict[str, dict[str, float]], other: dict[str, dict[str, float]], k: int = K) -> float:
    """Mean over the reference's queries of |top-k ∩ other's top-k| / k (a query `other` lacks counts 0)."""
    def top(hits: dict[str, float]) -> set[str]:
        return set(sorted(hits, key=hits.__getitem__, reverse=True)[:k])
    return sum(len(top(hits) & top(other.get(qid, {}))) for qid, hits in reference.items()) / (k * len(reference))


def check_search(plan: Plan, work: Path, fp16: bool, slices: int) -> str:
    """The search on `plan.search_device` against the CPU's flat search, both through dense_search."""
    if plan.search_device == "gpu" and not getattr(faiss, "get_num_gpus", lambda: 0)():
        raise CheckFailed("Faiss has no GPU support (faiss-cpu installed): make FAISS=gpu install")
    reference = work / "cpu.trec"
    if not reference.exists():
        dense_search(work / "index", work / "queries", reference, hits=K, latency_queries=0)
    run = work / f"{plan.search_device}-{'fp16' if fp16 else 'fp32'}-{slices}.trec"
    timing = dense_search(work / "index", work / "queries", run, hits=K, latency_queries=20,
                          device=plan.search_device, fp16=fp16, search_shards=slices)
    require((timing["device"], timing["search_shards"]) == (plan.search_device, slices),
            f"searched on {timing['device']} in {timing['search_shards']} slice(s)")
    overlap = top_k_overlap(read_run(reference), read_run(run))
    require(overlap >= MIN_OVERLAP, f"top-{K} overlap with the CPU search {overlap:.4f} < {MIN_OVERLAP}")
    return f"overlap {overlap:.4f}, {timing['search_ms_median']} ms/query on {timing['device_name']}"


def run_checks(plan: Plan, work: Path) -> list[Result]:
    """Every check in order; one that fails is reported and the others still run unless they need it."""
    results: list[Result] = []
    data = work / "data"

    def check(name: str, needs: tuple[str, ...], run: Callable[[], str]) -> None:
        failed = [r.name for r in results if r.name in needs and r.result != "pass"]
        if failed:
            results.append(Result(name, "skipped", f"needs {', '.join(failed)}"))
            return
        started = time.perf_counter()
        try:
            detail = run()
        except Exception as err:  # report it and go on: the checks after it are what we came for
            traceback.print_exc()
            results.append(Result(name, "FAIL", f"{type(err).__name__}: {err}"))
        else:
            results.append(Result(name, "pass", f"{detail}; {time.perf_counter() - started:.1f} s"))

    check(PRECISION, (), lambda: check_precision(plan))
    check(DATA, (), lambda: make_dataset(plan, data))
    check(TEACHER, (DATA,), lambda: check_training(plan, data, work, "teacher", plan.steps, "auto"))
    check(STUDENT, (TEACHER,), lambda: check_training(plan, data, work, "student", plan.steps, "auto"))
    check(FP16, (TEACHER,), lambda: check_fp16(plan, data, work))
    check(ENCODE, (STUDENT,), lambda: check_encoding(plan, data, work))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand Faiss the memory PyTorch's caching allocator still holds
    for fp16, slices in ((False, 1), (True, 1), (True, 3)):
        name = f"search {plan.search_device} {'fp16' if fp16 else 'fp32'}, {slices} slice(s), vs cpu"
        check(name, (ENCODE,), lambda fp16=fp16, slices=slices: check_search(plan, work, fp16, slices))
    return results


def report(plan: Plan, results: list[Result], seconds: float) -> str:
    if plan.device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(plan.device)
        where = f"{torch.cuda.get_device_name(plan.device)} (compute capability {major}.{minor})"
    else:
        where = f"the CPU ({cpu_name()})"
    gpus = getattr(faiss, "get_num_gpus", lambda: 0)()
    lines = [f"GPU check on {where}: torch {torch.__version__}, CUDA {torch.version.cuda}, faiss {faiss.__version__} "
             f"({gpus} GPU(s) visible to Faiss), PyTorch CPU capability {precision.cpu_capability()}; "
             f"{seconds:.0f} s", "", "| check | result | detail |", "|---|---|---|"]
    for r in results:
        detail = " ".join(r.detail.split()).replace("|", "\\|")
        lines.append(f"| {r.name} | {r.result} | {detail[:300]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep data, models, index and runs here (default: a temporary directory, removed)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    plan = Plan(device=torch.device("cuda", torch.cuda.current_device()))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="check-gpu-") as tmp:
        results = run_checks(plan, args.workdir or Path(tmp))
    print(report(plan, results, time.perf_counter() - started))
    return 0 if all(r.result == "pass" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
