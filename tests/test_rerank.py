import json

import numpy as np
import pytest
import torch

from pipeline.dense.rerank import colbert_rerank
from pipeline.dense.tokens import encode_tokens
from pipeline.formats import InputFormatError, read_run, write_id_text, write_run
from pipeline.models.colbert import ColBERT
from pipeline.shards import read_manifest
from tests.conftest import make_tiny_bert

PASSAGES = [(f"d{i}", text) for i, text in enumerate([
    "the quick brown fox, jumps!", "lazy dogs sleep all day", "foxes are clever animals", "stock markets fell",
    "a dog and a fox played", "weather report: rain", "brown bears eat fish", "quick thinking saves time"])]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    teacher = ColBERT.from_backbone(str(make_tiny_bert(root / "bert")), dim=8)
    teacher.save(root / "teacher")
    write_id_text(root / "collection.tsv", PASSAGES)
    write_id_text(root / "queries.tsv", [("q1", "quick fox"), ("q2", "dog"), ("q3", "no candidates")])
    write_run(root / "bm25.trec", {"q1": [("d0", 3.0), ("d2", 2.0), ("d4", 1.0), ("d7", 0.5)],
                                   "q2": [("d1", 2.0), ("d4", 1.0)]}, "bm25")
    (root / "bm25.latency.json").write_text(json.dumps({"latency_ms_median": 2.0}))
    return root


def test_token_shards_keep_only_maxsim_tokens(teacher_dir):
    shards = [teacher_dir / f"tok-{i}" for i in range(3)]
    for i, shard in enumerate(shards):
        encode_tokens(str(teacher_dir / "teacher"), teacher_dir / "collection.tsv", shard, i, 3, "float32",
                      precision="fp32")
    manifests = [read_manifest(s) for s in shards]
    assert sum(m["count"] for m in manifests) == len(PASSAGES)
    offsets = np.load(shards[0] / "offsets.npy")
    # "the quick brown fox, jumps!" -> [CLS] d the quick brown fox jumps: brackets, comma and "!" are dropped
    assert offsets[1] - offsets[0] == 7
    assert manifests[0]["bytes_per_passage"] > 0


def test_rerank_equals_teacher_scores_on_the_candidates(teacher_dir, tmp_path):
    shards = [teacher_dir / f"tok2-{i}" for i in range(2)]
    for i, shard in enumerate(shards):
        encode_tokens(str(teacher_dir / "teacher"), teacher_dir / "collection.tsv", shard, i, 2, "float32",
                      precision="fp32")
    record = colbert_rerank(str(teacher_dir / "teacher"), shards, teacher_dir / "queries.tsv",
                            teacher_dir / "bm25.trec", tmp_path / "rerank.trec", depth=3, latency_queries=2)
    run = read_run(tmp_path / "rerank.trec")
    teacher = ColBERT.load(teacher_dir / "teacher").eval()
    texts = dict(PASSAGES)
    for qid, query, candidates in (("q1", "quick fox", ["d0", "d2", "d4"]), ("q2", "dog", ["d1", "d4"])):
        assert set(run[qid]) == set(candidates)  # only the top `depth` candidates are re-ranked
        with torch.no_grad():
            expected = teacher.score_texts([query], [texts[p] for p in candidates])[0].numpy()
        assert [run[qid][p] for p in candidates] == pytest.approx(expected.tolist(), abs=1e-4)
        assert list(run[qid].values()) == sorted(run[qid].values(), reverse=True)
    assert "q3" not in run
    assert record["latency_ms_median"] == pytest.approx(2.0 + record["rerank_ms_median"], abs=1e-3)
    assert record["token_index_bytes_per_passage"] > 0


def test_token_index_of_another_teacher_is_refused(teacher_dir, tmp_path):
    other = ColBERT.from_backbone(str(make_tiny_bert(tmp_path / "bert", seed=5)), dim=8)
    other.save(tmp_path / "other")
    encode_tokens(str(tmp_path / "other"), teacher_dir / "collection.tsv", tmp_path / "tok", 0, 1)
    with pytest.raises(ValueError, match="token embeddings of the re-ranking teacher"):
        colbert_rerank(str(teacher_dir / "teacher"), [tmp_path / "tok"], teacher_dir / "queries.tsv",
                       teacher_dir / "bm25.trec", tmp_path / "run.trec")


@pytest.mark.parametrize(("name", "how"), [("tokens.npy", "zeroed"), ("tokens.npy", "truncated"),
                                           ("offsets.npy", "zeroed")])
def test_damaged_token_shard_is_refused_naming_the_file(teacher_dir, tmp_path, name, how):
    shard = tmp_path / "tok"
    encode_tokens(str(teacher_dir / "teacher"), teacher_dir / "collection.tsv", shard, 0, 1, "float32",
                  precision="fp32")
    manifest = read_manifest(shard)
    assert manifest["files"][name]["bytes"] == (shard / name).stat().st_size
    data = (shard / name).read_bytes()
    cut = len(data) - len(data) // 4  # the last quarter: past the 128-byte header even of the small offsets.npy
    (shard / name).write_bytes(data[:cut] + bytes(len(data) - cut) if how == "zeroed" else data[:-16])
    with pytest.raises(InputFormatError, match="blake2b checksum" if how == "zeroed" else "truncated") as err:
        colbert_rerank(str(teacher_dir / "teacher"), [shard], teacher_dir / "queries.tsv", teacher_dir / "bm25.trec",
                       tmp_path / "run.trec")
    assert str(shard / name) in str(err.value) and not (tmp_path / "run.trec").exists()
