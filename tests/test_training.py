import contextlib
import csv
import math
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from pipeline.formats import InputFormatError, format_prediction, read_collection, read_teacher_scores
from pipeline.models import colbert as colbert_module
from pipeline.models.backbone import Conventions, tokenize_passages, tokenize_queries
from pipeline.models.colbert import ColBERT
from pipeline.train import student as student_module
from pipeline.train.batches import TripleBatches
from pipeline.train.loop import LoopConfig
from pipeline.train.resume import load_checkpoint
from pipeline.train.student import EMBED_TARGET, read_generated, train_student
from pipeline.train.targets import TeacherTokens
from pipeline.train.teacher import train_teacher
from tests.conftest import ROOT, hang_guard, make_tiny_bert, make_triples_dataset, train_small_teacher

CFG = LoopConfig(steps=12, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    _, data = train_small_teacher(root, CFG)
    return root, data


def losses(path: Path, column: str = "loss") -> list[float]:
    with open(path) as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_teacher_loss_falls(setup):
    root, _ = setup
    curve = losses(root / "teacher.csv")
    assert len(curve) == CFG.steps and sum(curve[-3:]) < sum(curve[:3])


def test_student_loss_falls_and_teacher_stays_frozen(setup, monkeypatch):
    root, data = setup
    frozen = ColBERT.load(root / "teacher")
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    monkeypatch.setattr(colbert_module.ColBERT, "load", classmethod(lambda cls, directory: frozen))
    monkeypatch.setattr(student_module.ColBERT, "load", classmethod(lambda cls, directory: frozen))
    cfg = LoopConfig(steps=20, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=100)
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], root / "student",
                  root / "ck_student", root / "student.csv", cfg)
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    curve = losses(root / "student.csv")
    assert sum(curve[-5:]) < sum(curve[:5])
    # The student started from the teacher's BERT weights, then moved away from them.
    teacher_bert, student_bert = weights(root / "teacher"), weights(root / "student")
    assert set(teacher_bert) == set(student_bert)
    assert any(not torch.equal(teacher_bert[k], student_bert[k]) for k in teacher_bert)


@pytest.mark.parametrize("init", ["teacher", "backbone", "student"])
def test_student_starts_from_the_chosen_weights(setup, init):
    """With a zero learning rate the saved student is its initialisation: the teacher's BERT, the backbone, or
    another trained student (a hard-negative round continuing from tct_inbatch)."""
    root, data = setup
    previous = root / f"previous_for_{init}"
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], previous,
                  root / f"ck_previous_{init}", root / f"previous_{init}.csv",
                  LoopConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=0, checkpoint_every=100))
    cfg = LoopConfig(steps=2, batch_size=8, lr=0.0, warmup_steps=0, checkpoint_every=100)
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], root / f"init_{init}",
                  root / f"ck_init_{init}", root / f"init_{init}.csv", cfg, init=init, backbone=str(root / "bert"),
                  init_from=previous)
    sources = {"teacher": root / "teacher", "backbone": root / "bert", "student": previous}
    source, student = weights(sources[init]), weights(root / f"init_{init}")
    shared = [k for k in student if k in source]
    assert len(shared) >= len(student) - 1  # a pooler the backbone saves and the student may not use
    assert all(torch.equal(student[k], source[k]) for k in shared)
    for name, other in sources.items():
        if name != init:
            assert any(not torch.equal(student[k], weights(other)[k]) for k in shared if k in weights(other)), name
    state = load_checkpoint(sorted((root / f"ck_init_{init}").glob("step-*.pt"))[-1])
    assert ("init_from" in state["made_from"]["inputs"]) == (init == "student")


@pytest.mark.parametrize(("schedule", "warmup", "expected"),
                         [("constant", 0, [1.0] * 6), ("linear", 2, [0.5, 1.0, 0.75, 0.5, 0.25, 0.0])])
def test_learning_rate_follows_the_schedule(setup, schedule, warmup, expected):
    """The teacher's default (ColBERT v1) holds the rate; the students' (released code) warm up, then decay to 0.
    The losses file logs, after each step, the rate the next step uses."""
    root, data = setup
    cfg = LoopConfig(steps=6, batch_size=8, lr=1e-3, warmup_steps=warmup, checkpoint_every=100, schedule=schedule)
    train_teacher(str(root / "bert"), data["triples"], data["queries"], data["collection"], root / f"t_{schedule}",
                  root / f"ck_t_{schedule}", root / f"t_{schedule}.csv", cfg)
    assert losses(root / f"t_{schedule}.csv", "lr") == pytest.approx([1e-3 * factor for factor in expected])


@pytest.mark.parametrize("dropout", [False, True])
def test_teacher_labels_in_eval_mode_unless_asked_for_dropout(setup, monkeypatch, dropout):
    """Eval mode by default (deterministic soft labels); `teacher_dropout` keeps BERT's dropout on while the
    teacher labels, as the released code's teacher does, and is recorded in the checkpoints' fingerprint."""
    root, data = setup
    frozen = ColBERT.load(root / "teacher")
    monkeypatch.setattr(student_module.ColBERT, "load", classmethod(lambda cls, directory: frozen))
    cfg = LoopConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=0, checkpoint_every=100)
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], root / f"drop_{dropout}",
                  root / f"ck_drop_{dropout}", root / f"drop_{dropout}.csv", cfg, teacher_dropout=dropout)
    assert all(module.training == dropout for module in frozen.modules())
    assert not any(parameter.requires_grad for parameter in frozen.parameters())
    state = load_checkpoint(sorted((root / f"ck_drop_{dropout}").glob("step-*.pt"))[-1])
    assert state["made_from"]["settings"].get("teacher_dropout", False) == dropout


def test_bf16_autocast_training_runs_and_logs_finite_losses(setup):
    root, data = setup
    cfg = LoopConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=100, precision="bf16")
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], root / "bf16",
                  root / "ck_bf16", root / "bf16.csv", cfg)
    curve = losses(root / "bf16.csv")
    assert len(curve) == 4 and all(math.isfinite(value) for value in curve)


def student_command(root: Path, data: dict, name: str, steps: int, *extra: str) -> list[str]:
    return ["-m", "pipeline.train.student", "--teacher", str(root / "teacher"), "--triples", str(data["triples"]),
            "--queries", str(data["queries"]), "--collection", str(data["collection"]), "--out", str(root / name),
            "--checkpoints", str(root / f"ck_{name}"), "--losses", str(root / f"{name}.csv"), "--steps", str(steps),
            "--batch-size", "8", "--lr", "1e-3", "--warmup-steps", "2", *extra]


@pytest.mark.slow(seconds=30)
def test_killed_and_resumed_run_equals_uninterrupted(setup):
    root, data = setup
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    steps = 100  # the victim is killed at its first checkpoint (step 10), far from its last
    subprocess.run([sys.executable, *student_command(root, data, "whole", steps, "--checkpoint-every", "10")],
                   check=True, env=env, capture_output=True, timeout=hang_guard(600))
    victim = subprocess.Popen([sys.executable, *student_command(root, data, "killed", steps,
                                                                "--checkpoint-every", "10")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((root / "ck_killed").glob("step-*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (root / "killed").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, *student_command(root, data, "killed", steps, "--checkpoint-every", "10")],
                   check=True, env=env, capture_output=True, timeout=hang_guard(600))
    whole, resumed = weights(root / "whole"), weights(root / "killed")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert losses(root / "whole.csv") == losses(root / "killed.csv")


def test_resume_refuses_a_checkpoint_of_another_configuration(setup):
    root, data = setup
    cfg = LoopConfig(steps=4, batch_size=8, lr=1e-3, checkpoint_every=2)
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], root / "a",
                  root / "ck_shared", root / "a.csv", cfg, gamma=0.1)
    more = LoopConfig(steps=6, batch_size=8, lr=1e-3, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"made from other inputs \(gamma 0.1 -> 0.5; loop.steps 4 -> 6\); "
                                         r"delete them or set student.train.resume: discard"):
        train_student(root / "teacher", data["triples"], data["queries"], data["collection"], root / "b",
                      root / "ck_shared", root / "b.csv", more, gamma=0.5)
    assert not (root / "b").exists()


def test_triples_with_unknown_ids_are_refused(setup, tmp_path):
    root, data = setup
    bad = tmp_path / "triples.tsv"
    bad.write_text("q0\tp0\tn0\nq1\tp1\tmissing\n")
    with pytest.raises(InputFormatError, match=r"triples.tsv, line 2: expected pids from .* missing"):
        train_student(root / "teacher", bad, data["queries"], data["collection"], tmp_path / "s", tmp_path / "ck",
                      tmp_path / "s.csv", CFG)
    bad.write_text("")
    with pytest.raises(InputFormatError, match="at least one training triple"):
        train_student(root / "teacher", bad, data["queries"], data["collection"], tmp_path / "s", tmp_path / "ck",
                      tmp_path / "s.csv", CFG)


@pytest.mark.slow(seconds=32)
def test_two_process_torchrun_matches_single_process_accumulation(tmp_path):
    """DDP over 2 gloo ranks accumulating 2 micro-batches each = one process accumulating the same 4: one
    softmax over the whole batch either way (passages gathered across ranks by default, gradients cached
    across micro-batches, DDP's all-reduce once per step).

    Every step's loss and gradient norm are compared, not the weights: the two runs sum in other orders,
    and Adam moves a weight whose gradient is ~0 (attention key biases: exactly 0) by ~lr whatever its
    rounding, so weights differ by up to 1e-3 after 6 steps. Noise moves the losses by 1e-5 and the norms
    by 2e-4 (relative); a rank left out of the all-reduce, or a gather without gradient, moved the first
    step's gradient norm by 30-70% and later losses by 0.02-0.5."""
    bert = make_tiny_bert(tmp_path / "bert", dropout=0.0)
    data = make_triples_dataset(tmp_path / "data")
    # Passages cut to 12 tokens, the student's too (it takes the teacher's conventions): gathered passages are
    # padded to the full length, so both runs then pad alike and round alike.
    train_teacher(str(bert), data["triples"], data["queries"], data["collection"], tmp_path / "teacher",
                  tmp_path / "ck_teacher", tmp_path / "teacher.csv", CFG, Conventions(doc_length=12))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    subprocess.run([*torchrun, *student_command(tmp_path, data, "ddp", 6, "--accumulation", "2")], check=True,
                   env=env, capture_output=True, timeout=hang_guard(600))
    subprocess.run([sys.executable, *student_command(tmp_path, data, "single", 6, "--accumulation", "4")],
                   check=True, env=env, capture_output=True, timeout=hang_guard(600))
    assert losses(tmp_path / "ddp.csv") == pytest.approx(losses(tmp_path / "single.csv"), abs=5e-5)
    assert losses(tmp_path / "ddp.csv", "grad_norm") == pytest.approx(losses(tmp_path / "single.csv", "grad_norm"),
                                                                     rel=1e-3)
    subprocess.run([*torchrun, *student_command(tmp_path, data, "own", 3, "--no-gather")], check=True,
                   env=env, capture_output=True, timeout=hang_guard(600))
    assert len(losses(tmp_path / "own.csv")) == 3


@pytest.mark.slow(seconds=40)
def test_killed_two_process_run_resumes_every_rank_where_it_stopped(setup, tmp_path):
    """With dropout each rank draws its own masks: a SIGKILLed torchrun run, resumed, ends with the weights
    and losses of an uninterrupted one only if every rank gets its own random state back."""
    root, data = setup  # the teacher's BERT has dropout 0.1
    (tmp_path / "teacher").symlink_to(root / "teacher")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    steps, every = "40", "10"  # killed at its first checkpoint (step 10): 30 steps before it could finish
    subprocess.run([*torchrun, *student_command(tmp_path, data, "whole", int(steps), "--checkpoint-every", every)],
                   check=True, env=env, capture_output=True, timeout=hang_guard(600), cwd=root)
    command = [*torchrun, *student_command(tmp_path, data, "killed", int(steps), "--checkpoint-every", every)]
    victim = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while not list((tmp_path / "ck_killed").glob("step-*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    # As a crash would: torchrun and both ranks. torchrun starts each rank in a session of its own, so killing
    # its process group alone would leave the ranks training on, writing beside the resumed run.
    ranks = psutil.Process(victim.pid).children(recursive=True)
    os.killpg(victim.pid, signal.SIGKILL)
    for rank in ranks:
        with contextlib.suppress(psutil.NoSuchProcess):  # already gone with the group
            rank.kill()
    victim.wait()
    psutil.wait_procs(ranks, timeout=hang_guard(10))
    assert not (tmp_path / "killed").exists(), "the run finished before it could be killed"
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=hang_guard(600), cwd=root)
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert losses(tmp_path / "whole.csv") == losses(tmp_path / "killed.csv")


def test_teacher_score_file_is_parsed_and_bad_lines_are_named(setup, tmp_path):
    _, data = setup
    triples = [line.split("\t") for line in data["triples"].read_text().splitlines()]
    scores = tmp_path / "scores.tsv"
    scores.write_text("".join(f"{10.5 - i % 3}\t{2.25}\t{q}\t{p}\t{n}\n" for i, (q, p, n) in enumerate(triples)))
    parsed = read_teacher_scores(scores)
    assert parsed[tuple(triples[1])] == (9.5, 2.25) and len(parsed) == len(set(map(tuple, triples)))
    # Only the triples asked for are kept (the authors' files score far more triples than a run trains on).
    assert read_teacher_scores(scores, {tuple(triples[1])}) == {tuple(triples[1]): (9.5, 2.25)}
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(InputFormatError, match=r"empty\.tsv: expected at least one scored triple"):
        read_teacher_scores(tmp_path / "empty.tsv", set())
    for bad, expected in (("9.1\t2.0\tq0\tp0\n", "line 2"), ("high\t2.0\tq0\tp0\tn0\n", "line 2")):
        scores.write_text(f"1.0\t0.5\t{triples[0][0]}\t{triples[0][1]}\t{triples[0][2]}\n{bad}")
        with pytest.raises(InputFormatError, match=f"scores.tsv, {expected}: expected 'pos_score neg_score qid"):
            read_teacher_scores(scores)
    # A triple the file does not score is named with its line in the triples file, or left out and counted.
    scores.write_text(f"1.0\t0.5\t{triples[0][0]}\t{triples[0][1]}\t{triples[0][2]}\n")
    with pytest.raises(InputFormatError, match=r"line 2: expected a triple scored in"):
        TripleBatches(data["triples"], data["queries"], data["collection"], 4, 0, scores)
    kept = TripleBatches(data["triples"], data["queries"], data["collection"], 4, 0, scores, unscored="drop")
    assert kept.rows == [tuple(triples[0])] and kept.scores == [(1.0, 0.5)]
    assert kept.unscored == len(triples) - 1
    scores.write_text("1.0\t0.5\tq-none\tp-none\tn-none\n")
    with pytest.raises(InputFormatError, match=r"scores.tsv: expected scores of at least one triple"):
        TripleBatches(data["triples"], data["queries"], data["collection"], 4, 0, scores, unscored="drop")


def test_margin_mse_from_a_score_file_needs_no_teacher_model(setup, tmp_path):
    root, data = setup
    triples = [line.split("\t") for line in data["triples"].read_text().splitlines()]
    scores = tmp_path / "scores.tsv"
    scores.write_text("".join(f"12.0\t3.0\t{q}\t{p}\t{n}\n" for q, p, n in triples))
    cfg = LoopConfig(steps=12, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=100)
    with pytest.raises(ValueError, match="use triplet or margin_mse"):
        train_student(None, data["triples"], data["queries"], data["collection"], tmp_path / "x", tmp_path / "ckx",
                      tmp_path / "x.csv", cfg, "inbatch", teacher_scores=scores)
    train_student(None, data["triples"], data["queries"], data["collection"], tmp_path / "m", tmp_path / "ck",
                  tmp_path / "m.csv", cfg, "margin_mse", gamma=0.0, init="backbone", backbone=str(root / "bert"),
                  teacher_scores=scores)
    curve = losses(tmp_path / "m.csv")
    assert sum(curve[-3:]) < sum(curve[:3])


def test_embedding_matching_pulls_a_narrower_student_toward_the_teacher(setup, tmp_path, monkeypatch):
    root, data = setup
    narrow = make_tiny_bert(tmp_path / "narrow", hidden_size=16)
    trained = {}
    real_fit = student_module.fit

    def spy(model, *args, **kwargs):
        trained["map"], trained["initial"] = model.matcher, model.matcher.weight.detach().clone()
        real_fit(model, *args, **kwargs)

    monkeypatch.setattr(student_module, "fit", spy)
    cfg = LoopConfig(steps=12, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=100)
    train_student(root / "teacher", data["triples"], data["queries"], data["collection"], tmp_path / "e",
                  tmp_path / "ck", tmp_path / "e.csv", cfg, "none", init="backbone", backbone=str(narrow),
                  embed_weight=1.0)
    curve = losses(tmp_path / "e.csv")
    assert sum(curve[-3:]) < sum(curve[:3])
    # The learned map, student width 16 -> the teacher's ColBERT dimension, is trained with the student ...
    assert isinstance(trained["map"], nn.Linear) and trained["map"].weight.shape == (128, 16)
    assert not torch.equal(trained["map"].weight, trained["initial"])
    assert weights(tmp_path / "e")["embeddings.word_embeddings.weight"].shape[1] == 16  # ... and not saved
    checkpoint = load_checkpoint(sorted((tmp_path / "ck").glob("step-*.pt"))[-1])
    assert checkpoint["made_from"]["settings"]["embed_target"] == EMBED_TARGET


def test_embedding_matching_targets_the_mean_of_the_teachers_maxsim_token_vectors(tmp_path):
    """Per text, by hand: the teacher's projected, normalised token vectors, averaged over every query position
    and over the passage tokens that are neither padding nor punctuation, at unit length."""
    teacher = ColBERT.from_backbone(str(make_tiny_bert(tmp_path / "bert")), dim=8).eval()
    queries = ["what is a comet?", "copper"]
    passages = ["a comet, made of ice.", "copper: a metal!", "short", "the river (far away); quiet"]
    with torch.no_grad():
        query_targets, passage_targets = TeacherTokens.of(
            teacher, tokenize_queries(teacher.tokenizer, queries, teacher.conv),
            tokenize_passages(teacher.tokenizer, passages, teacher.conv)).matching_targets()

        def by_hand(tokens: dict, keep) -> torch.Tensor:
            vectors = F.normalize(teacher.linear(teacher.bert(**tokens).last_hidden_state[0]), dim=-1)
            kept = [i for i, token in enumerate(teacher.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0]))
                    if keep(token)]
            return F.normalize(vectors[kept].mean(0), dim=0)

        for query, target in zip(queries, query_targets, strict=True):
            alone = tokenize_queries(teacher.tokenizer, [query], teacher.conv)
            assert torch.allclose(target, by_hand(alone, lambda token: True), atol=1e-5)
        for passage, target in zip(passages, passage_targets, strict=True):
            alone = tokenize_passages(teacher.tokenizer, [passage], teacher.conv)  # unpadded
            assert torch.allclose(target, by_hand(alone, lambda token: token not in set(string.punctuation)),
                                  atol=1e-5)


def test_generated_queries_replace_a_seeded_share_of_each_batch(setup):
    _, data = setup
    triples = [line.split("\t") for line in data["triples"].read_text().splitlines()]
    generated = {pos: [f"generated for {pos} #{k}" for k in range(3)] for _, pos, _ in triples}
    pid_of = {text: pid for pid, text in read_collection(data["collection"])}
    plain = TripleBatches(data["triples"], data["queries"], data["collection"], 8, 0)
    mixed = TripleBatches(data["triples"], data["queries"], data["collection"], 8, 0, generated=generated,
                          generated_ratio=0.5)
    for step in range(3):
        batch, reference = mixed.micro_batch(step, 0, 1), plain.micro_batch(step, 0, 1)
        assert batch.positives == reference.positives and batch.negatives == reference.negatives
        assert batch.labelled.count(False) == 4
        for query, original, positive, labelled in zip(batch.queries, reference.queries, batch.positives,
                                                       batch.labelled, strict=True):
            assert query == original if labelled else query in generated[pid_of[positive]]
    # Deterministic per step, and a split into micro-batches sees the same rows as the whole batch.
    again = TripleBatches(data["triples"], data["queries"], data["collection"], 8, 0, generated=generated,
                          generated_ratio=0.5)
    whole = again.micro_batch(1, 0, 1)
    halves = [mixed.micro_batch(1, part, 2) for part in range(2)]
    assert whole.queries == halves[0].queries + halves[1].queries
    assert whole.labelled == halves[0].labelled + halves[1].labelled
    assert plain.micro_batch(0, 0, 1).labelled is None
    with pytest.raises(ValueError, match="generated_ratio must lie in"):
        TripleBatches(data["triples"], data["queries"], data["collection"], 8, 0, generated=generated,
                      generated_ratio=1.5)


def test_generated_queries_are_read_for_the_training_positives_only(setup, tmp_path):
    """Only the positives' predictions are kept (the full MS MARCO file holds 8.8M passages), from every file."""
    _, data = setup
    positives = sorted({line.split("\t")[1] for line in data["triples"].read_text().splitlines()})
    first, second = tmp_path / "shard-0.jsonl", tmp_path / "shard-1.jsonl"
    first.write_text(format_prediction(positives[0], ["one", "two"]) + format_prediction("unused", ["never"]))
    second.write_text(format_prediction(positives[1], ["three"]))
    assert read_generated([first, second], data["triples"]) == {positives[0]: ["one", "two"],
                                                                 positives[1]: ["three"]}
