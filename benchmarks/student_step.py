"""Student training step with the online (tightly coupled) teacher vs without it, same batch.

MiniLM student and teacher from the packaged model, batch of real MS MARCO passages from
../shared/data (a synthetic batch when absent), query 36 and passage 154 tokens. Prints seconds
per step for each and the ratio (the goal is under 1.5x: the frozen teacher only runs forward), in
fp32 and in each further precision named (default: what `auto` resolves to on this machine).

    python benchmarks/student_step.py [--batch-size 16] [--steps 5] [--precision auto bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from pipeline import precision
from pipeline.models.backbone import PACKAGED_MINILM, tokenize_passages, tokenize_queries
from pipeline.models.biencoder import BiEncoder
from pipeline.models.colbert import ColBERT, maxsim
from pipeline.timing import cpu_name
from pipeline.train.losses import student_loss


def batch_texts(size: int) -> tuple[list[str], list[str]]:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    data = shared / "msmarco-samples" / "triples.train.small.sample.tsv"
    if data.exists():
        rows = [line.split("\t") for line in data.read_text(encoding="utf-8").splitlines()[:size]]
        return [r[0] for r in rows], [r[1] for r in rows] + [r[2] for r in rows]
    return ([f"query number {i} about topic {i}" for i in range(size)],
            [f"a passage of forty words about topic {i} " * 6 for i in range(2 * size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", nargs="+", choices=precision.PRECISIONS, default=["auto"],
                        help="precisions timed besides fp32 (bf16 on a CPU without native bf16 shows the emulation)")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    precisions = list(dict.fromkeys(["fp32", *(precision.resolve(p, cpu) for p in args.precision)]))
    student = BiEncoder.from_backbone(PACKAGED_MINILM).train()
    teacher = ColBERT.from_backbone(PACKAGED_MINILM).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    queries, passages = batch_texts(args.batch_size)
    q_tokens = tokenize_queries(student.tokenizer, queries, student.conv)
    p_tokens = tokenize_passages(student.tokenizer, passages, student.conv)

    def step(with_teacher: bool, resolved: str) -> float:
        tick = time.perf_counter()
        with precision.autocast(cpu, resolved):
            scores = student(q_tokens["input_ids"], q_tokens["attention_mask"]) @ student(
                p_tokens["input_ids"], p_tokens["attention_mask"]).T
            teacher_scores = None
            if with_teacher:
                with torch.no_grad():
                    q = teacher.query_embeddings(q_tokens["input_ids"], q_tokens["attention_mask"])
                    d, mask = teacher.doc_embeddings(p_tokens["input_ids"], p_tokens["attention_mask"])
                    teacher_scores = maxsim(q, q_tokens["attention_mask"], d, mask)
            loss = student_loss(scores.float(), teacher_scores, "inbatch" if with_teacher else "none")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - tick

    rows = []
    for resolved in precisions:
        step(True, resolved)  # warm-up
        timings = {mode: [] for mode in (False, True)}
        for _ in range(args.steps):
            for mode in (False, True):
                timings[mode].append(step(mode, resolved))
        rows.append((resolved, statistics.median(timings[False]), statistics.median(timings[True])))
    print(f"\nMiniLM, batch {args.batch_size} (x2 passages, {p_tokens['input_ids'].shape[1]} tokens); {cpu_name()}; "
          f"PyTorch CPU capability {precision.cpu_capability()}, native bf16: {precision.cpu_native_bf16()}; "
          f"{torch.get_num_threads()} threads\n")
    print("| precision | no teacher (s/step) | with the online ColBERT teacher (s/step) | teacher overhead | "
          "vs fp32 with teacher |")
    print("|---|---|---|---|---|")
    for resolved, without, with_teacher in rows:
        print(f"| {resolved} | {without:.3f} | {with_teacher:.3f} | {with_teacher / without:.2f}x | "
              f"{with_teacher / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
