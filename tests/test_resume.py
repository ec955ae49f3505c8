"""Checkpoints are keyed by the content of the inputs (issue 15): a changed input never resumes silently.

A tiny random BERT trains for a handful of steps on CPU; each test takes a few seconds.
"""

import os
import random
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.doc2query.model import ScratchT5
from pipeline.doc2query.train import train_doc2query
from pipeline.train import loop as loop_module
from pipeline.train import resume as resume_module
from pipeline.train.context import Context
from pipeline.train.loop import LoopConfig
from pipeline.train.resume import content_digest, load_checkpoint, source_digest
from pipeline.train.student import train_student
from pipeline.train.teacher import main as teacher_main
from pipeline.train.teacher import train_teacher
from tests.conftest import train_small_teacher

CFG = LoopConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    bert, data = train_small_teacher(root, CFG)
    return root, bert, data


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def same(a: Path, b: Path) -> bool:
    left, right = weights(a), weights(b)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def copy_data(data: dict[str, Path], directory: Path) -> dict[str, Path]:
    directory.mkdir()
    return {name: Path(shutil.copy(path, directory / path.name)) for name, path in data.items()}


def change_triples_same_size(path: Path) -> None:
    """Other negatives for the first rows (n1 <-> n2 ...): a new md5, the same path and size."""
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    for i in range(1, 9):
        rows[i][2] = f"n{i % 8 + 1}"
    size = path.stat().st_size
    path.write_text("".join("\t".join(row) + "\n" for row in rows))
    assert path.stat().st_size == size


def teach(bert: Path, data: dict, root: Path, name: str, checkpoints: str, cfg: LoopConfig = CFG) -> None:
    train_teacher(str(bert), data["triples"], data["queries"], data["collection"], root / name, root / checkpoints,
                  root / f"{name}.csv", cfg)


def test_changed_triples_stop_the_teacher_by_default_and_discard_trains_afresh(base, tmp_path):
    """The fault probe: triples replaced (same path) after training; the rerun resumed at the last step,
    trained nothing and wrote the old model."""
    _, bert, original = base
    data = copy_data(original, tmp_path / "data")
    teach(bert, data, tmp_path, "old", "ck")
    change_triples_same_size(data["triples"])
    with pytest.raises(ValueError, match=r"checkpoints under .*ck were made from other inputs \(triples "
                                         r".*triples.tsv changed\); delete them or set teacher.train.resume: "
                                         r"discard"):
        teach(bert, data, tmp_path, "rerun", "ck")
    assert not (tmp_path / "rerun").exists()
    teach(bert, data, tmp_path, "rerun", "ck", replace(CFG, resume="discard"))
    teach(bert, data, tmp_path, "fresh", "ck_fresh")  # the new triples, from no checkpoint at all
    assert same(tmp_path / "rerun", tmp_path / "fresh")
    assert not same(tmp_path / "rerun", tmp_path / "old")
    # The discarded run's checkpoints are replaced: a third run resumes them (it would fail otherwise).
    teach(bert, data, tmp_path, "again", "ck")
    assert same(tmp_path / "again", tmp_path / "fresh")


def test_the_cli_takes_resume_discard(base, tmp_path):
    _, bert, original = base
    data = copy_data(original, tmp_path / "data")
    argv = ["--backbone", str(bert), "--triples", str(data["triples"]), "--queries", str(data["queries"]),
            "--collection", str(data["collection"]), "--out", str(tmp_path / "model"), "--checkpoints",
            str(tmp_path / "ck"), "--losses", str(tmp_path / "losses.csv"), "--steps", "2", "--batch-size", "8",
            "--lr", "1e-3", "--checkpoint-every", "1"]
    teacher_main(argv)
    with (data["queries"]).open("a") as out:
        out.write("q99\twhat is new?\n")
    with pytest.raises(ValueError, match=r"\(queries .*queries.tsv changed\)"):
        teacher_main(argv)
    with pytest.raises(SystemExit):
        teacher_main([*argv, "--resume", "sometimes"])
    teacher_main([*argv, "--resume", "discard"])
    teacher_main(argv)  # the new checkpoints match


def student(root: Path, teacher: Path, data: dict, name: str, checkpoints: str, resume: str = "auto") -> None:
    cfg = LoopConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=2)
    cfg = cfg if resume == "auto" else replace(cfg, resume=resume)
    train_student(teacher, data["triples"], data["queries"], data["collection"], root / name, root / checkpoints,
                  root / f"{name}.csv", cfg)


def test_changed_teacher_weights_stop_the_student_by_default_and_discard_trains_afresh(base, tmp_path):
    """The fault probe: the teacher's weights replaced; the rerun resumed and wrote the old student."""
    root, _, data = base
    teacher = Path(shutil.copytree(root / "teacher", tmp_path / "teacher"))
    student(tmp_path, teacher, data, "old", "ck")
    tensors = weights(teacher)
    save_file({name: value + 0.01 if value.is_floating_point() else value for name, value in tensors.items()},
              str(teacher / "model.safetensors"))
    with pytest.raises(ValueError, match=r"were made from other inputs \(teacher .*teacher changed\); delete them "
                                         r"or set student.train.resume: discard"):
        student(tmp_path, teacher, data, "rerun", "ck")
    assert not (tmp_path / "rerun").exists()
    student(tmp_path, teacher, data, "rerun", "ck", resume="discard")
    student(tmp_path, teacher, data, "fresh", "ck_fresh")
    assert same(tmp_path / "rerun", tmp_path / "fresh")
    assert not same(tmp_path / "rerun", tmp_path / "old")


class Interrupted(Exception):
    pass


def stop_after_checkpoint(monkeypatch, step: int) -> None:
    """Make training raise Interrupted right after it wrote the checkpoint of `step`."""
    save = loop_module.save_checkpoint

    def save_then_stop(directory, state, keep):
        save(directory, state, keep)
        if state["step"] == step:
            raise Interrupted

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_stop)


def test_unchanged_content_resumes_bit_identically_at_another_path_and_mtime(base, tmp_path, monkeypatch):
    """Content, not paths or times, keys a checkpoint: copies of the inputs (new paths, new mtimes) resume
    a run stopped after a checkpoint, and it ends with the weights and losses of an uninterrupted run
    (dropout 0.1: the random states come back from a weights_only checkpoint)."""
    _, bert, data = base
    cfg = LoopConfig(steps=6, batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=2)
    teach(bert, data, tmp_path, "whole", "ck_whole", cfg)
    stop_after_checkpoint(monkeypatch, 4)
    with pytest.raises(Interrupted):
        teach(bert, data, tmp_path, "stopped", "ck", cfg)
    monkeypatch.undo()
    # Numpy and Python draw something between the runs: the resumed run must not depend on it.
    np.random.rand(3)
    random.random()
    moved = copy_data(data, tmp_path / "moved")
    os.utime(moved["triples"], ns=(1, 1))
    teach(bert, moved, tmp_path, "stopped", "ck", cfg)
    assert same(tmp_path / "whole", tmp_path / "stopped")
    assert (tmp_path / "whole.csv").read_text().count("\n") == 7
    losses = [[row.split(",")[:2] for row in (tmp_path / name).read_text().splitlines()]
              for name in ("whole.csv", "stopped.csv")]
    assert losses[0] == losses[1]


def test_a_student_caching_gradients_resumes_bit_identically(base, tmp_path, monkeypatch):
    """Accumulation with dropout 0.1: the cache replays each micro-batch's random state for its second pass and
    gives the generators back, so a run stopped after a checkpoint ends as an uninterrupted one."""
    root, _, data = base
    cfg = LoopConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, checkpoint_every=2, accumulation=2)

    def train(name: str, checkpoints: str) -> None:
        train_student(root / "teacher", data["triples"], data["queries"], data["collection"], tmp_path / name,
                      tmp_path / checkpoints, tmp_path / f"{name}.csv", cfg)

    train("whole", "ck_whole")
    stop_after_checkpoint(monkeypatch, 2)
    with pytest.raises(Interrupted):
        train("stopped", "ck")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ck" / "step-00000002.pt")["made_from"]["settings"]["gradient_cache"]
    train("stopped", "ck")
    assert same(tmp_path / "whole", tmp_path / "stopped")
    step_and_loss = [[row.split(",")[:2] for row in (tmp_path / name).read_text().splitlines()]
                     for name in ("whole.csv", "stopped.csv")]
    assert step_and_loss[0] == step_and_loss[1]


def test_checkpoints_load_with_weights_only_and_restore_every_random_state(base, tmp_path):
    root, _, _ = base
    path = sorted((root / "ck_teacher").glob("step-*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    assert state["step"] == CFG.steps and set(state["made_from"]["inputs"]) == {"backbone", "triples", "queries",
                                                                                "collection"}
    # The random states survive a weights_only round trip: the same draws follow.
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.standard_normal()  # numpy caches a gaussian: part of its state
    saved = resume_module.rng_states(Context(torch.device("cpu")))
    torch.save({"rng": saved}, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random())
    resume_module.set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"][0])
    drawn = (torch.rand(3), np.random.rand(3), np.random.standard_normal(), random.random())
    assert torch.equal(expected[0], drawn[0]) and np.array_equal(expected[1], drawn[1])
    assert expected[2:] == drawn[2:]


def test_a_checkpoint_of_an_earlier_version_is_refused_then_discarded(base, tmp_path):
    """Written by the old loop (numpy state pickled, no content fingerprint): not loadable with weights_only."""
    _, bert, data = base
    (tmp_path / "ck").mkdir()
    torch.save({"step": 2, "identity": "0123456789abcdef", "rng": [{"numpy": np.random.get_state()}]},
               tmp_path / "ck" / "step-00000002.pt")
    assert load_checkpoint(tmp_path / "ck" / "step-00000002.pt") is None
    with pytest.raises(ValueError, match=r"made from other inputs \(written by an earlier version"):
        teach(bert, data, tmp_path, "model", "ck")
    teach(bert, data, tmp_path, "model", "ck", replace(CFG, resume="discard"))
    assert sorted(p.name for p in (tmp_path / "ck").glob("step-*.pt")) == ["step-00000002.pt", "step-00000004.pt"]
    assert load_checkpoint(tmp_path / "ck" / "step-00000002.pt")["made_from"]["stage"] == "teacher"


def test_a_changed_setting_is_named_and_bookkeeping_settings_may_change(base, tmp_path):
    _, bert, data = base
    teach(bert, data, tmp_path, "a", "ck")
    # How often checkpoints are written and how many are kept do not change the weights.
    teach(bert, data, tmp_path, "b", "ck", replace(CFG, checkpoint_every=3, keep_checkpoints=1))
    assert same(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ValueError, match=r"\(loop.lr 0.001 -> 0.002\)"):
        teach(bert, data, tmp_path, "c", "ck", replace(CFG, lr=2e-3))


def test_doc2query_checkpoints_are_keyed_by_the_qrels(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "collection.tsv").write_text("".join(f"p{i}\tpassage {i} about topic {i}\n" for i in range(4)))
    (data / "queries.tsv").write_text("".join(f"q{i}\twhat about topic {i}\n" for i in range(4)))
    qrels = data / "qrels.txt"
    qrels.write_text("".join(f"q{i} 0 p{i} 1\n" for i in range(4)))
    tiny = ScratchT5(d_model=16, encoder_layers=1, decoder_layers=1, heads=2, d_ff=32, dropout=0.0)

    def train(resume: str = "auto") -> None:
        cfg = LoopConfig(steps=2, batch_size=2, lr=1e-3, checkpoint_every=1)
        cfg = cfg if resume == "auto" else replace(cfg, resume=resume)
        train_doc2query(data / "collection.tsv", data / "queries.tsv", qrels, tmp_path / "model", tmp_path / "ck",
                        tmp_path / "losses.csv", cfg, size=tiny, max_source_length=16, max_target_length=6)

    train()
    qrels.write_text("".join(f"q{i} 0 p{(i + 1) % 4} 1\n" for i in range(4)))
    with pytest.raises(ValueError, match=r"\(qrels .*qrels.txt changed\); delete them or set "
                                         r"doc2query.train.loop.resume: discard"):
        train()
    train("discard")


def test_content_digest_catches_a_same_size_edit_and_ignores_the_path(tmp_path):
    small = tmp_path / "small.tsv"
    small.write_bytes(b"a" * 5000)
    before = content_digest(small)
    small.write_bytes(b"a" * 2500 + b"b" + b"a" * 2499)
    os.utime(small, ns=(1, 1))
    assert content_digest(small) != before
    assert content_digest(Path(shutil.copy(small, tmp_path / "copy.tsv"))) == content_digest(small)
    assert source_digest("some-org/some-model") == "name:some-org/some-model"
    assert source_digest("all-MiniLM-L6-v2").startswith("directory:")  # the packaged model, by its files


def test_large_files_are_sampled_with_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(resume_module, "FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(resume_module, "SAMPLE_BLOCK", 10)
    monkeypatch.setattr(resume_module, "SAMPLE_BLOCKS", 4)
    big = tmp_path / "big.tsv"
    big.write_bytes(bytes(range(256)) * 20)
    os.utime(big, ns=(10**18, 10**18))
    first = content_digest(big)
    assert first.startswith("sampled:5120:1000000000000000000:")
    reads = []
    real_open = open

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def seek(self, offset):
            self.handle.seek(offset)

        def read(self, size):
            reads.append(size)
            return self.handle.read(size)

    monkeypatch.setattr("builtins.open", lambda path, mode="r": Counting(real_open(path, mode)))
    content_digest(big)
    monkeypatch.undo()
    assert reads == [10] * 4  # 4 blocks of 10 bytes, not 5120 bytes
    data = bytearray(big.read_bytes())
    data[0] ^= 1  # in the first block
    big.write_bytes(bytes(data))
    os.utime(big, ns=(10**18, 10**18))
    assert content_digest(big) != first
    data[0] ^= 1
    data[2000] ^= 1  # between sampled blocks: caught by the mtime of the rewrite
    big.write_bytes(bytes(data))
    assert content_digest(big) != first
