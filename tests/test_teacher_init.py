"""`--init-from`: a teacher re-trained from a saved teacher's weights and settings (TCT-ColBERT v2's HN+ round)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.models.backbone import CONVENTIONS_FILE
from pipeline.models.colbert import HEAD_FILE
from pipeline.train.loop import LoopConfig
from pipeline.train.resume import load_checkpoint
from pipeline.train.teacher import main, train_teacher
from tests.conftest import make_tiny_bert, make_triples_dataset

# The first teacher's settings differ from every default, so a re-trained teacher that ignored them shows.
FIRST = {"dim": 16, "bias": True, "normalize_queries": False}


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A teacher trained 2 steps from a tiny random BERT: weights away from the backbone's and a fresh head's."""
    root = tmp_path_factory.mktemp("teacher_init")
    bert = make_tiny_bert(root / "bert")
    data = {**make_triples_dataset(root / "data"), "bert": bert, "root": root}
    cfg = LoopConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=0, checkpoint_every=100)
    train_teacher(str(bert), data["triples"], data["queries"], data["collection"], root / "first",
                  root / "ck_first", root / "first.csv", cfg, **FIRST)
    return root / "first", data


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return {**load_file(str(directory / "model.safetensors")),
            **{f"head.{k}": v for k, v in load_file(str(directory / HEAD_FILE)).items()}}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def command(data: dict, name: str, steps: int, *start: str, lr: str = "1e-3") -> list[str]:
    root = data["root"]
    return [*start, "--triples", str(data["triples"]), "--queries", str(data["queries"]),
            "--collection", str(data["collection"]), "--out", str(root / name),
            "--checkpoints", str(root / f"ck_{name}"), "--losses", str(root / f"{name}.csv"),
            "--steps", str(steps), "--batch-size", "8", "--lr", lr]


def test_zero_steps_from_a_teacher_keep_its_weights_and_settings(first):
    teacher, data = first
    main(command(data, "again", 0, "--init-from", str(teacher)))
    again = data["root"] / "again"
    assert same(weights(again), weights(teacher))
    saved = json.loads((again / CONVENTIONS_FILE).read_text())
    assert {key: saved[key] for key in FIRST} == FIRST
    assert saved == json.loads((teacher / CONVENTIONS_FILE).read_text())


def test_zero_steps_from_the_backbone_differ_from_the_teacher(first):
    teacher, data = first
    main(command(data, "fresh", 0, "--backbone", str(data["bert"]), "--dim", "16", "--bias", "--unnormalized-queries"))
    fresh, trained = weights(data["root"] / "fresh"), weights(teacher)
    assert fresh.keys() == trained.keys()
    bert_keys = [k for k in fresh if not k.startswith("head.") and "pooler" not in k]  # the pooler is frozen
    assert any(not torch.equal(fresh[k], trained[k]) for k in bert_keys)
    assert not torch.equal(fresh["head.weight"], trained["head.weight"])


def test_a_step_from_a_teacher_starts_from_its_weights(first):
    """At lr 0 one optimisation step changes nothing: the checkpoint holds the starting weights, and records them."""
    teacher, data = first
    main(command(data, "step", 1, "--init-from", str(teacher), lr="0"))
    assert same(weights(data["root"] / "step"), weights(teacher))
    state = load_checkpoint(data["root"] / "ck_step" / "step-00000001.pt")
    assert state["made_from"]["inputs"]["init_from"]["path"] == str(teacher)
    assert state["made_from"]["inputs"]["backbone"]["digest"] == "absent"


def test_checkpoints_from_another_start_are_not_resumed(first):
    teacher, data = first
    main(command(data, "mixed", 1, "--backbone", str(data["bert"]), "--dim", "16", "--bias", "--unnormalized-queries"))
    with pytest.raises(ValueError, match=r"made from other inputs \(.*init_from .*first changed"):
        main(command(data, "mixed", 1, "--init-from", str(teacher)))
    main([*command(data, "mixed", 1, "--init-from", str(teacher), lr="0"), "--resume", "discard"])
    assert same(weights(data["root"] / "mixed"), weights(teacher))


@pytest.mark.parametrize(("option", "named"), [(["--dim", "128"], "dim 128 (saved: 16)"),
                                               (["--max-query-length", "20"], "conventions"),
                                               (["--bias", "--unnormalized-queries", "--dim", "16"], None)])
def test_conflicting_settings_are_refused(first, option, named):
    teacher, data = first
    if named is None:  # options that agree with the saved teacher are accepted, and training runs
        main([*command(data, "agree", 0, "--init-from", str(teacher)), *option])
        assert same(weights(data["root"] / "agree"), weights(teacher))
        return
    with pytest.raises(ValueError, match=rf"--init-from .*first: .*{re.escape(named)}"):
        main([*command(data, "conflict", 0, "--init-from", str(teacher)), *option])
    assert not (data["root"] / "conflict").exists()


def test_conflicting_normalisation_is_refused(first):
    teacher, data = first
    cfg = LoopConfig(steps=0, batch_size=8, lr=1e-3)
    with pytest.raises(ValueError, match=r"normalize_queries True \(saved: False\)"):
        train_teacher(None, data["triples"], data["queries"], data["collection"], data["root"] / "n",
                      data["root"] / "ck_n", data["root"] / "n.csv", cfg, normalize_queries=True, init_from=teacher)


def test_a_start_is_required_and_unique(first):
    teacher, data = first
    with pytest.raises(SystemExit):
        main(command(data, "none", 0))
    with pytest.raises(SystemExit):
        main(command(data, "both", 0, "--backbone", str(data["bert"]), "--init-from", str(teacher)))
    cfg = LoopConfig(steps=0, batch_size=8, lr=1e-3)
    with pytest.raises(ValueError, match="not both"):
        train_teacher(str(data["bert"]), data["triples"], data["queries"], data["collection"], data["root"] / "x",
                      data["root"] / "ck_x", data["root"] / "x.csv", cfg, init_from=teacher)
