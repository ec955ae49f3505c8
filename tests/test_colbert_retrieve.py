import json

import faiss
import numpy as np
import pytest
import torch

from pipeline.dense import colbert_retrieve as retrieve_module
from pipeline.dense import token_index
from pipeline.dense.colbert_retrieve import colbert_retrieve
from pipeline.dense.token_index import build_token_index
from pipeline.dense.tokens import TokenStore, encode_tokens
from pipeline.formats import InputFormatError, read_run, write_id_text
from pipeline.models.backbone import tokenize_queries
from pipeline.models.colbert import ColBERT
from pipeline.shards import read_manifest
from tests.conftest import make_tiny_bert, write_word_collection

QUERIES = [(f"q{i}", text) for i, text in enumerate(
    ["apple river", "violin glacier falcon", "copper comet", "harbor lantern canyon", "storm orbit", "quartz",
     "meadow cipher timber", "pepper marble apple"])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """300 passages of 3-20 words, a random 16-dim teacher, and its float32 token shards (2 of them)."""
    root = tmp_path_factory.mktemp("colbert_e2e")
    rng = np.random.default_rng(0)
    passages = write_word_collection(root / "collection.tsv", rng, 300, 21, id_format="d{:03d}")
    write_id_text(root / "queries.tsv", QUERIES)
    ColBERT.from_backbone(str(make_tiny_bert(root / "bert")), dim=16).save(root / "teacher")
    for shard in range(2):
        encode_tokens(str(root / "teacher"), root / "collection.tsv", root / f"tok-{shard}", shard, 2, "float32",
                      precision="fp32")  # float32: exact comparisons below
    with torch.no_grad():
        exact = ColBERT.load(root / "teacher").eval().score_texts([q for _, q in QUERIES], [t for _, t in passages])
    np.save(root / "exact.npy", exact.numpy())
    return root, [pid for pid, _ in passages]


def shards(root):
    return [root / "tok-0", root / "tok-1"]


def exact_ranking(root, pids, row):
    """(pid, score) of every passage by exact MaxSim for query `row`, score descending then pid."""
    scores = np.load(root / "exact.npy")[row]
    return [(pids[i], float(scores[i])) for i in np.lexsort((np.array(pids), -scores))]


def test_flat_retrieval_equals_exact_maxsim_over_the_whole_collection(corpus, tmp_path):
    root, pids = corpus
    build_token_index(shards(root), tmp_path / "flat", kind="flat")
    record = colbert_retrieve(str(root / "teacher"), tmp_path / "flat", shards(root), root / "queries.tsv",
                              tmp_path / "run.trec", hits=7, depth=100_000, latency_queries=2)
    run = read_run(tmp_path / "run.trec")
    for row, (qid, _) in enumerate(QUERIES):
        expected = exact_ranking(root, pids, row)[:7]
        assert list(run[qid]) == [pid for pid, _ in expected]
        assert list(run[qid].values()) == pytest.approx([score for _, score in expected], abs=1e-4)
    assert record["candidates_median"] == len(pids)  # k' beyond every token: every passage is a candidate
    assert record["latency_ms_median"] > 0 and record["latency_queries"] == 2


def test_candidates_are_the_passages_of_each_query_tokens_nearest_tokens(corpus, tmp_path):
    """With a small k' the run holds exactly the union, over query tokens, of the passages owning their k' nearest
    tokens (brute force here), each scored by exact MaxSim."""
    root, pids = corpus
    build_token_index(shards(root), tmp_path / "flat", kind="flat")
    colbert_retrieve(str(root / "teacher"), tmp_path / "flat", shards(root), root / "queries.tsv",
                     tmp_path / "run.trec", hits=1000, depth=3, latency_queries=0)
    run = read_run(tmp_path / "run.trec")
    store = TokenStore(shards(root))
    tokens = np.concatenate([np.asarray(t) for t in store.tokens])
    owner = np.repeat(np.arange(store.passages), np.diff(store.token_offsets))
    teacher = ColBERT.load(root / "teacher").eval()
    for row, (qid, text) in enumerate(QUERIES):
        encoded = tokenize_queries(teacher.tokenizer, [text], teacher.conv)
        with torch.no_grad():
            query = teacher.query_embeddings(encoded["input_ids"], encoded["attention_mask"])[0].numpy()
        nearest = np.argsort(-(query @ tokens.T), axis=1)[:, :3]
        expected = {pids[p] for p in np.unique(owner[nearest])}
        assert set(run[qid]) == expected and len(expected) > 3
        exact = dict(exact_ranking(root, pids, row))
        assert list(run[qid].values()) == pytest.approx([exact[pid] for pid in run[qid]], abs=1e-4)


def test_ivfpq_retrieval_on_a_small_collection(corpus, tmp_path):
    root, pids = corpus
    token_index.main(["--tokens", *map(str, shards(root)), "--out", str(tmp_path / "ivfpq"), "--pq-m", "4",
                      "--pq-bits", "4", "--sample", "0.5"])
    manifest = read_manifest(tmp_path / "ivfpq")
    tokens = manifest["tokens"]
    assert manifest["kind"] == "ivfpq" and manifest["partitions"] == token_index.default_partitions(tokens)
    assert 39 * manifest["partitions"] <= manifest["sample"] <= tokens
    assert 0 < manifest["index_bytes_per_passage"] < manifest["token_bytes_per_passage"]
    assert manifest["model_fingerprint"] == read_manifest(root / "tok-0")["model_fingerprint"]
    retrieve_module.main(["--model", str(root / "teacher"), "--index", str(tmp_path / "ivfpq"), "--tokens",
                          *map(str, shards(root)), "--queries", str(root / "queries.tsv"), "--run",
                          str(tmp_path / "run.trec"), "--hits", "20", "--depth", "20", "--nprobe", "4",
                          "--latency-queries", "3"])
    run = read_run(tmp_path / "run.trec")
    record = json.loads((tmp_path / "run.latency.json").read_text())
    assert record["nprobe"] == 4 and record["partitions"] == manifest["partitions"]
    assert record["candidates_median"] >= 20 and all(len(run[qid]) == 20 for qid, _ in QUERIES)
    assert record["faiss_index_bytes_per_passage"] == manifest["index_bytes_per_passage"]
    assert record["storage_bytes_per_passage"] == pytest.approx(
        record["token_index_bytes_per_passage"] + record["faiss_index_bytes_per_passage"], abs=0.2)
    overlap = [len(set(list(run[qid])[:10]) & {pid for pid, _ in exact_ranking(root, pids, row)[:10]}) / 10
               for row, (qid, _) in enumerate(QUERIES)]
    assert np.mean(overlap) >= 0.8, overlap


def test_gpu_build_path_gives_the_cpu_index(corpus, tmp_path, monkeypatch):
    """The GPU branch (k-means assignments and coarse quantizer on a copy) builds the very same index; a CPU
    copy stands in for the GPU one."""
    root, _ = corpus
    build_token_index(shards(root), tmp_path / "cpu", partitions=16, pq_m=4, pq_bits=4)
    monkeypatch.setattr(token_index, "gpu_copy", faiss.clone_index)
    build_token_index(shards(root), tmp_path / "gpu", partitions=16, pq_m=4, pq_bits=4)
    assert (tmp_path / "gpu" / "index.faiss").read_bytes() == (tmp_path / "cpu" / "index.faiss").read_bytes()


def test_default_partitions_follow_colbert_v1_and_the_training_points():
    assert token_index.default_partitions(600_000_000) == 262_144  # 1 << ceil(log2(8 sqrt(n)))
    assert token_index.default_partitions(1_000_000) == 8192
    assert token_index.default_partitions(3600) == 92  # 512 by the rule: more than 3600 / 39 points allow
    assert token_index.default_partitions(10) == 1


def test_too_many_partitions_for_the_tokens_are_refused(corpus, tmp_path):
    root, _ = corpus
    with pytest.raises(ValueError, match="lower --partitions"):
        build_token_index(shards(root), tmp_path / "ivfpq", partitions=4096, pq_m=4, pq_bits=4)


@pytest.mark.parametrize(("target", "how"), [("tok-1/tokens.npy", "zeroed"), ("index.faiss", "zeroed"),
                                             ("index.faiss", "truncated")])
def test_damaged_token_shard_or_index_is_refused_naming_the_file(corpus, tmp_path, target, how):
    root, _ = corpus
    copies = []
    for shard in shards(root):  # damage copies, not the module's shards
        (tmp_path / shard.name).mkdir()
        for path in shard.iterdir():
            (tmp_path / shard.name / path.name).write_bytes(path.read_bytes())
        copies.append(tmp_path / shard.name)
    build_token_index(copies, tmp_path / "index", kind="flat")
    damaged = tmp_path / ("index/" + target if target == "index.faiss" else target)
    data = damaged.read_bytes()
    cut = len(data) - len(data) // 4
    damaged.write_bytes(data[:cut] + bytes(len(data) - cut) if how == "zeroed" else data[:-16])
    with pytest.raises(InputFormatError, match="blake2b checksum" if how == "zeroed" else "truncated") as err:
        colbert_retrieve(str(root / "teacher"), tmp_path / "index", copies, root / "queries.tsv", tmp_path / "run.trec")
    assert str(damaged) in str(err.value) and not (tmp_path / "run.trec").exists()


def test_index_of_other_token_shards_is_refused(corpus, tmp_path):
    root, _ = corpus
    encode_tokens(str(root / "teacher"), root / "collection.tsv", tmp_path / "whole", 0, 1, "float32",
                  precision="fp32")
    build_token_index([tmp_path / "whole"], tmp_path / "index", kind="flat")
    with pytest.raises(InputFormatError, match="the token shards this index was built from"):
        colbert_retrieve(str(root / "teacher"), tmp_path / "index", shards(root), root / "queries.tsv",
                         tmp_path / "run.trec")
