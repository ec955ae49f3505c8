"""Shared fixtures: the repository root, the real data beside it (tests skip without it), a tiny random BERT, a
random-word collection, and the small demo's settings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `make test` two workers share the cores: one thread each (torch, Faiss and what they start inherit
    # it), else their OpenMP threads spin against each other's and a training test takes six times as long.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# The vocabulary of the random-word collections (tests/test_dense.py, tests/test_colbert_retrieve.py).
WORDS = ("apple", "river", "engine", "violin", "glacier", "falcon", "copper", "tulip", "comet", "harbor",
         "lantern", "canyon", "pepper", "marble", "storm", "orbit", "meadow", "cipher", "timber", "quartz")


def write_word_collection(path: Path, rng, count: int, max_words: int, words: Sequence[str] = WORDS,
                          id_format: str = "d{}") -> list[tuple[str, str]]:
    """`count` passages of 3 to `max_words` - 1 words drawn by `rng` (a NumPy Generator) from `words`, written to
    `path` as a collection (`pid<TAB>text`); returns them."""
    from pipeline.formats import write_id_text

    passages = [(id_format.format(i), " ".join(rng.choice(words, size=rng.integers(3, max_words))))
                for i in range(count)]
    write_id_text(path, passages)
    return passages


def hang_guard(seconds: float) -> float:
    """A subprocess time-out that only catches hangs, never measures speed.

    `seconds` is at least 3x the step's duration on the slowest CPU we support (2 AVX2 cores, fp32, one
    core busy with something else); PIPELINE_TEST_TIMEOUT_SCALE multiplies every such guard on a slower
    or busier machine (CI can raise it in one place).
    """
    return seconds * float(os.environ.get("PIPELINE_TEST_TIMEOUT_SCALE", "1"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the calling test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data beside the repo)")
    return path


def make_tiny_bert(directory: Path, dropout: float = 0.0, seed: int = 0, hidden_size: int = 32) -> Path:
    """A randomly initialised 2-layer BERT with the packaged MiniLM's uncased vocabulary (fast on CPU)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.models.backbone import PACKAGED_MINILM, resolve_backbone

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(PACKAGED_MINILM))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256,
                        hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def neighbour_students(settings: dict, loop: dict) -> None:
    """Add to `settings` the neighbouring methods in their own settings, as Table 4's last rows: Margin-MSE from
    a cross-encoder (trained with `loop`) into a student from the backbone, EmbedDistill's asymmetric query
    encoder searching tct_inbatch's index, and the cross-encoder re-ranking BM25 for reference. (EmbedDistill's
    dual-pooling student adds no rule: its dry run and its training are tested in test_workflow.py and
    test_cross_encoder.py, at the cost of no whole-DAG jobs.)"""
    settings["cross_encoder"] = {"pair_length": 64, "train": loop}
    variants = settings["student"].setdefault("variants", {})
    variants["margin_ce"] = {"condition": "margin_mse", "gamma": 0.0, "teacher": "cross_encoder", "init": "backbone"}
    variants["asym"] = {"condition": "inbatch", "searches": "tct_inbatch"}
    if settings.get("table4"):
        settings["table4"]["strategies"].update({"Margin-MSE: its cross-encoder": "margin_ce",
                                                 "EmbedDistill: asymmetric query encoder": "asym",
                                                 "cross-encoder re-ranking BM25 (reference)": "cross_encoder-bm25"})


def small_demo_overlay(workdir: Path, table4: bool = False) -> Path:
    """Settings over profiles/demo/workflow.yaml for a small whole-DAG run (400 passages, a tiny random BERT,
    3 training steps, a tiny T5), written to `workdir`/overlay.yaml for the workflow and cluster tests.
    With `table4`, the three students and the table that the demo profile switches off come back, from
    config.yaml, and the neighbouring methods' own settings join them (`neighbour_students`)."""
    import yaml

    tiny = make_tiny_bert(workdir / "tiny-bert")
    loop = {"steps": 3, "batch_size": 4, "lr": 1.0e-4, "warmup_steps": 1, "checkpoint_every": 2, "precision": "auto"}
    settings = {
        "dataset": {"synthetic": {"passages": 400, "train": 60, "dev": 40, "dl": 8}},
        "bm25": {"latency_queries": 5}, "model": {"backbone": str(tiny)},
        "teacher": {"train": loop}, "student": {"train": loop},
        "dense": {"latency_queries": 5, "precision": "auto", "index": {"kind": "flat", "nlist": 8, "pq_m": 8}},
        "rerank": {"depth": 20},
        "fusion": {"tune_queries": 30, "grid": {"start": 0.0, "stop": 1.0, "step": 0.1}},
        "doc2query": {"n_queries": 2, "generate": {"samples": 2, "max_target_length": 6},
                      "train": {"size": {"d_model": 16, "heads": 2, "d_ff": 32, "encoder_layers": 1,
                                         "decoder_layers": 1},
                                "loop": {"steps": 3, "batch_size": 4, "checkpoint_every": 2}}}}
    if table4:
        paper = yaml.safe_load((workdir / "config.yaml").read_text())
        settings["student"]["variants"] = {name: paper["student"]["variants"][name]
                                           for name in ("tct_margin", "tct_embed", "tct_generated")}
        settings["table4"] = paper["table4"]
        neighbour_students(settings, loop)
    path = workdir / "overlay.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))  # Table 4's rows keep their order
    return path


def make_triples_dataset(directory: Path, n_queries: int = 16) -> dict[str, Path]:
    """A small hand-made training set: query i asks about topic i; its positive mentions it."""
    topics = ["apple", "river", "engine", "violin", "glacier", "falcon", "copper", "tulip", "comet", "harbor",
              "lantern", "canyon", "pepper", "marble", "saddle", "orchid", "beacon", "walnut", "meadow", "quartz"]
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.tsv" for name in ("collection", "queries", "triples")}
    with open(paths["collection"], "w") as out:
        for i, topic in enumerate(topics):
            out.write(f"p{i}\tthis passage explains the {topic}, its history and uses.\n")
            out.write(f"n{i}\tan unrelated note about weather, traffic and the {topics[(i + 7) % len(topics)]}.\n")
    with open(paths["queries"], "w") as out:
        for i in range(n_queries):
            out.write(f"q{i}\twhat is the {topics[i % len(topics)]}?\n")
    with open(paths["triples"], "w") as out:
        for i in range(n_queries):
            out.write(f"q{i}\tp{i % len(topics)}\tn{i % len(topics)}\n")
    return paths


WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "scripts", "schemas", "profiles", "envs")


def copy_workflow(destination: Path) -> Path:
    """A copy of the workflow (not of results or resources) to run Snakemake in, so that it writes nothing
    into the repository."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, destination / name)
    return destination


def train_small_teacher(root: Path, cfg) -> tuple[Path, dict[str, Path]]:
    """A tiny random BERT (dropout on), the hand-made triples, and a ColBERT teacher trained on them under
    `root`/teacher (checkpoints in `root`/ck_teacher)."""
    from pipeline.train.teacher import train_teacher

    bert = make_tiny_bert(root / "bert", dropout=0.1)
    data = make_triples_dataset(root / "data")
    train_teacher(str(bert), data["triples"], data["queries"], data["collection"], root / "teacher",
                  root / "ck_teacher", root / "teacher.csv", cfg)
    return bert, data



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests (`@pytest.mark.slow(seconds=...)`, the usual duration on 2 AVX2 cores) longest first, each
    followed by one fast test. `make test` runs pytest-xdist's load scheduler one test at a time after an
    initial two per worker, so each worker starts with one of the longest (the whole-DAG run on one, the
    own-corpus run on the other) and no long test waits behind another."""
    def expected(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return marker.kwargs.get("seconds", 15) if marker else 0

    slow = sorted((item for item in items if expected(item)), key=expected, reverse=True)
    fast = [item for item in items if not expected(item)]
    paired = [test for index, long_one in enumerate(slow) for test in (long_one, *fast[index:index + 1])]
    items[:] = paired + fast[len(slow):]
