"""EmbedDistill's asymmetric student: a narrower query encoder trained against a dense model, whose index it
then searches without the corpus being encoded again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.dense.encode import encode_corpus
from pipeline.dense.index import build_index
from pipeline.dense.queries import encode_queries
from pipeline.dense.runtime import model_fingerprint
from pipeline.dense.search import dense_search
from pipeline.formats import InputFormatError, read_queries, read_run
from pipeline.models.biencoder import BiEncoder
from pipeline.models.query_encoder import QueryEncoder
from pipeline.shards import open_shard
from pipeline.train.loop import LoopConfig
from pipeline.train.query_encoder import asymmetric_loss, train_query_encoder
from tests.conftest import make_tiny_bert, make_triples_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dense model of width 32 (the teacher) and a width-16 query encoder trained 12 steps against it."""
    root = tmp_path_factory.mktemp("query_encoder")
    data = make_triples_dataset(root / "data")
    BiEncoder.from_backbone(str(make_tiny_bert(root / "bert", seed=3))).save(root / "teacher")
    narrow = make_tiny_bert(root / "narrow", hidden_size=16)
    cfg = LoopConfig(steps=12, batch_size=8, lr=3e-3, warmup_steps=0, checkpoint_every=100)
    train_query_encoder(str(root / "teacher"), str(narrow), data["triples"], data["queries"], data["collection"],
                        root / "student", root / "ck", root / "losses.csv", cfg)
    return root, data


def test_the_student_moves_toward_the_teacher_queries(trained):
    root, data = trained
    student = QueryEncoder.load(root / "student").eval()
    teacher = BiEncoder.load(root / "teacher").eval()
    torch.manual_seed(13)  # the map's initial weights, as training drew them (its seed)
    untrained = QueryEncoder(BiEncoder.from_backbone(str(root / "narrow")), torch.nn.Linear(16, 32, bias=False), "", "")
    texts = list(read_queries(data["queries"]).values())
    with torch.no_grad():
        target = teacher.encode_queries(texts)
        after = (student.encode_queries(texts) - target).pow(2).sum(-1).mean()
        before = (untrained.eval().encode_queries(texts) - target).pow(2).sum(-1).mean()
    assert student.dims == 32 and student.projection.in_features == 16
    assert after < 0.5 * before, (float(before), float(after))


def test_its_queries_search_the_teacher_index_and_no_other(trained):
    root, data = trained
    for shard in range(2):
        encode_corpus(str(root / "teacher"), data["collection"], root / "shards" / f"shard-{shard}", shard, 2,
                      "float32", precision="fp32")
    build_index([root / "shards" / "shard-0", root / "shards" / "shard-1"], data["collection"], root / "index")
    [manifest] = encode_queries(str(root / "student"), [data["queries"]], [root / "q"], precision="fp32",
                                latency_queries=2)
    assert manifest["model_fingerprint"] == model_fingerprint(str(root / "teacher")) and manifest["dims"] == 32
    dense_search(root / "index", root / "q", root / "run.trec", hits=5, latency_queries=0)
    run = read_run(root / "run.trec")
    # The run is the student's vectors against the teacher's passages, by brute force.
    vectors, ids, _ = open_shard(root / "q")
    passages = np.concatenate([open_shard(root / "shards" / f"shard-{s}")[0] for s in range(2)])
    pids = [pid for s in range(2) for pid in open_shard(root / "shards" / f"shard-{s}")[1]]
    best = np.argsort(-(vectors @ passages.T), axis=1)[:, 0]
    assert all(max(run[qid], key=run[qid].get) == pids[best[row]] for row, qid in enumerate(ids))
    # Another model's index refuses them.
    BiEncoder.from_backbone(str(make_tiny_bert(root / "other-bert", seed=4))).save(root / "other")
    encode_corpus(str(root / "other"), data["collection"], root / "other-shard", 0, 1, "float32", precision="fp32")
    build_index([root / "other-shard"], data["collection"], root / "other-index")
    with pytest.raises(InputFormatError, match="model_fingerprint"):
        dense_search(root / "other-index", root / "q", root / "other.trec", hits=5, latency_queries=0)
    saved = json.loads((root / "student" / "tct_conventions.json").read_text())
    assert saved["kind"] == "query_encoder" and saved["passages_from"] == str(root / "teacher")


def test_the_loss_is_kl_plus_query_embedding_matching():
    queries, passages = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0],
                                                                              [1.0, 1.0], [0.0, 0.0]])
    # The student equal to the teacher: nothing to learn.
    assert asymmetric_loss(queries, queries, passages, 1.0, 1.0).abs() < 1e-6
    moved = queries + torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    kl = asymmetric_loss(moved, queries, passages, 0.0, 1.0)
    assert kl > 0 and torch.allclose(asymmetric_loss(moved, queries, passages, 2.0, 1.0), kl + 2.0 * 0.25 / 2)
