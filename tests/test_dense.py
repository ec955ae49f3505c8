import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.dense.compare_indexes import compare_indexes
from pipeline.dense.encode import encode_corpus
from pipeline.dense.index import build_index
from pipeline.dense.queries import encode_queries
from pipeline.dense.search import dense_search
from pipeline.formats import InputFormatError, read_queries, read_run, write_id_text
from pipeline.models.biencoder import BiEncoder
from pipeline.shards import EMBEDDINGS_FILE, IDS_FILE, open_shard, write_ids
from pipeline.sparse.jvm import import_pyserini
from tests.conftest import WORDS, hang_guard, make_tiny_bert, write_word_collection


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense")
    rng = np.random.default_rng(0)
    words = WORDS[:14]
    write_word_collection(root / "collection.tsv", rng, 230, 30, words)
    write_id_text(root / "queries.tsv", [(f"q{i}", " ".join(rng.choice(words, size=3))) for i in range(12)])
    BiEncoder.from_backbone(str(make_tiny_bert(root / "bert"))).save(root / "model")
    BiEncoder.from_backbone(str(make_tiny_bert(root / "bert2", seed=1))).save(root / "other_model")
    encode_queries(str(root / "model"), [root / "queries.tsv"], [root / "q"], precision="fp32", latency_queries=3)
    return root


def encode_sharded(root, shards, dtype="float32", name=None):
    directories = []
    for shard in range(shards):
        out = root / (name or f"emb{shards}{dtype}") / f"shard-{shard}"
        encode_corpus(str(root / "model"), root / "collection.tsv", out, shard, shards, dtype, batch_size=16,
                      precision="fp32")  # exact comparisons below: no bf16 rounding on CPUs that have it
        directories.append(out)
    return directories


def test_sharded_flat_search_equals_numpy_brute_force(corpus):
    index = corpus / "index3"
    build_index(encode_sharded(corpus, 3), corpus / "collection.tsv", index)
    dense_search(index, corpus / "q", corpus / "run3.trec", hits=50, latency_queries=2)
    run = read_run(corpus / "run3.trec")

    one, ids, _ = open_shard(encode_sharded(corpus, 1)[0])
    queries, qids, _ = open_shard(corpus / "q")
    scores = queries @ np.asarray(one, dtype=np.float32).T
    for row, qid in enumerate(qids):
        best = np.sort(scores[row])[::-1][:50]
        assert list(run[qid].values()) == pytest.approx(best.tolist(), abs=1e-4)  # same ranked scores
        cutoff = best[-1] + 1e-4  # above the 50th score nothing can be a tie at the boundary
        assert {p for p, s in run[qid].items() if s > cutoff} == {ids[i] for i in np.where(scores[row] > cutoff)[0]}
        for pid, score in run[qid].items():
            assert score == pytest.approx(scores[row, ids.index(pid)], abs=1e-4)
    timing = json.loads((corpus / "run3.latency.json").read_text())
    assert timing["search_ms_median"] > 0 and timing["latency_ms_median"] >= timing["search_ms_median"]


def test_tokenisation_windows_do_not_change_the_vectors(corpus, monkeypatch):
    """A shard tokenised in windows (large shards) gives the rows a single window gives, in collection order."""
    whole, ids, _ = open_shard(encode_sharded(corpus, 1)[0])
    monkeypatch.setattr("pipeline.dense.encode.WINDOW", 37)  # 230 passages: six full windows and a partial one
    windowed, windowed_ids, _ = open_shard(encode_sharded(corpus, 1, name="windowed")[0])
    assert windowed_ids == ids
    assert np.allclose(windowed, whole, atol=1e-5)


def test_shard_count_does_not_change_the_run(corpus):
    for shards in (1, 4):
        build_index(encode_sharded(corpus, shards), corpus / "collection.tsv", corpus / f"index{shards}")
        dense_search(corpus / f"index{shards}", corpus / "q", corpus / f"run{shards}.trec", hits=20,
                     latency_queries=0)
    one, four = read_run(corpus / "run1.trec"), read_run(corpus / "run4.trec")
    # Batches hold other passages under another sharding, so float sums may differ in the last bits:
    # the ranked scores agree within 1e-4, and so does the set of passages clear of ties at the cut-off.
    assert one.keys() == four.keys()
    for qid in one:
        ranked_one, ranked_four = list(one[qid].values()), list(four[qid].values())
        assert len(ranked_one) == 20 and ranked_four == pytest.approx(ranked_one, abs=1e-4)
        cutoff = ranked_one[-1] + 1e-4
        assert {p for p, s in one[qid].items() if s > cutoff} == {p for p, s in four[qid].items() if s > cutoff}
        assert all(abs(one[qid][pid] - four[qid][pid]) < 1e-4 for pid in one[qid].keys() & four[qid].keys())


def test_existing_shard_is_kept_and_float16_is_stored_as_float16(corpus):
    directory = encode_sharded(corpus, 2, "float16")[0]
    stamp = (directory / EMBEDDINGS_FILE).stat().st_mtime_ns
    encode_corpus(str(corpus / "model"), corpus / "collection.tsv", directory, 0, 2, "float16")
    assert (directory / EMBEDDINGS_FILE).stat().st_mtime_ns == stamp
    vectors, _, manifest = open_shard(directory)
    assert vectors.dtype == np.float16 and manifest["dtype"] == "float16"


def test_killed_shard_restarts_cleanly(corpus):
    """A SIGKILLed encode leaves its staging directory behind; the rerun removes it and writes the shard."""
    out = corpus / "killed" / "shard-1"
    stale = corpus / "killed" / ".shard-1.x1y2.tmp"
    stale.mkdir(parents=True)
    (stale / EMBEDDINGS_FILE).write_bytes(b"half a file")
    encode_corpus(str(corpus / "model"), corpus / "collection.tsv", out, 1, 2, "float32", batch_size=16,
                  precision="fp32")
    assert sorted(p.name for p in (corpus / "killed").iterdir()) == ["shard-1"]
    vectors, ids, _ = open_shard(out)
    reference, reference_ids, _ = open_shard(encode_sharded(corpus, 2)[1])
    assert ids == reference_ids and np.allclose(vectors, reference, atol=1e-5)


def damage(path, how):
    """Half of the file zeroed at the same size, or its last 100 bytes cut off."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + bytes(len(data) - len(data) // 2) if how == "zeroed" else data[:-100])


@pytest.mark.parametrize("how", ["zeroed", "truncated"])
def test_damaged_shard_is_re_encoded_with_a_warning_naming_the_file(corpus, caplog, how):
    """A shard whose emb.npy no longer matches its manifest is encoded again, not kept (it was kept when half of
    it was zeroed, and a truncated one stopped encode with a failing mmap naming no file)."""
    directory = encode_sharded(corpus, 2, name=f"damaged-{how}")[1]
    reference, _, _ = open_shard(directory)
    reference = np.array(reference)
    damage(directory / EMBEDDINGS_FILE, how)
    with pytest.raises(InputFormatError, match=re.escape(str(directory / EMBEDDINGS_FILE))):
        open_shard(directory)
    with caplog.at_level("WARNING", logger="pipeline.dense.encode"):
        encode_corpus(str(corpus / "model"), corpus / "collection.tsv", directory, 1, 2, "float32", batch_size=16,
                      precision="fp32")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"re-encoding {directory}" in warnings[0]
    assert str(directory / EMBEDDINGS_FILE) in warnings[0]
    vectors, _, manifest = open_shard(directory)
    assert np.allclose(vectors, reference, atol=1e-5)
    assert manifest["files"][EMBEDDINGS_FILE]["bytes"] == (directory / EMBEDDINGS_FILE).stat().st_size


def test_hnsw_recall_against_flat(corpus):
    shards = encode_sharded(corpus, 2)
    build_index(shards, corpus / "collection.tsv", corpus / "flat")
    build_index(shards, corpus / "collection.tsv", corpus / "hnsw", kind="hnsw", hnsw_m=16)
    dense_search(corpus / "flat", corpus / "q", corpus / "flat.trec", hits=10, latency_queries=0)
    dense_search(corpus / "hnsw", corpus / "q", corpus / "hnsw.trec", hits=10, latency_queries=0)
    flat, hnsw = read_run(corpus / "flat.trec"), read_run(corpus / "hnsw.trec")
    recall = np.mean([len(set(flat[q]) & set(hnsw[q])) / 10 for q in flat])
    assert recall >= 0.9
    # compare_indexes reports the same recall, and flat against itself is exact.
    table = compare_indexes(shards, corpus / "collection.tsv", corpus / "q", corpus / "compare.tsv",
                            ["hnsw", "ivfpq"], k=10, latency_queries=3, hnsw_m=16, nlist=4, pq_m=8, pq_bits=4)
    written = pd.read_csv(corpus / "compare.tsv", sep="\t").set_index("kind")
    assert list(table["kind"]) == list(written.index) == ["flat", "hnsw", "ivfpq"]
    assert written.loc["flat", "recall@10"] == 1.0
    assert written.loc["hnsw", "recall@10"] == pytest.approx(recall, abs=1e-4)
    assert 0.0 < written.loc["ivfpq", "recall@10"] < 1.0
    assert written.loc["ivfpq", "bytes_per_passage"] < written.loc["flat", "bytes_per_passage"]
    assert not list(corpus.glob(".compare-*"))  # scratch indexes are removed


def test_ivfpq_index_builds_and_searches(corpus):
    build_index(encode_sharded(corpus, 2), corpus / "collection.tsv", corpus / "ivfpq", kind="ivfpq", nlist=4,
                pq_m=8, pq_bits=4, nprobe=4)
    with pytest.raises(ValueError, match="IVF-PQ needs at least"):
        build_index(encode_sharded(corpus, 2), corpus / "collection.tsv", corpus / "ivfpq2", kind="ivfpq", nlist=4)
    with pytest.raises(ValueError, match="choose pq_m dividing"):
        build_index(encode_sharded(corpus, 2), corpus / "collection.tsv", corpus / "ivfpq3", kind="ivfpq", nlist=4,
                    pq_m=7, pq_bits=4)
    dense_search(corpus / "ivfpq", corpus / "q", corpus / "ivfpq.trec", hits=20, latency_queries=0)
    assert all(len(hits) == 20 for hits in read_run(corpus / "ivfpq.trec").values())


def test_pyserini_faiss_searcher_reads_our_index(corpus):
    build_index(encode_sharded(corpus, 2), corpus / "collection.tsv", corpus / "for_pyserini")
    dense_search(corpus / "for_pyserini", corpus / "q", corpus / "ours.trec", hits=10, latency_queries=0)
    ours = read_run(corpus / "ours.trec")
    faiss_search = import_pyserini("pyserini.search.faiss")
    searcher = faiss_search.FaissSearcher(str(corpus / "for_pyserini"), None)
    queries, qids, _ = open_shard(corpus / "q")
    for row, qid in enumerate(qids):
        hits = searcher.search(np.asarray(queries[row:row + 1], dtype=np.float32), k=10)
        assert [h.docid for h in hits] == list(ours[qid])  # our run is written in rank order
        assert [h.score for h in hits] == pytest.approx(list(ours[qid].values()), abs=1e-5)


def test_bad_shards_and_mismatched_models_are_refused(corpus, tmp_path):
    shards = encode_sharded(corpus, 2, name="bad")
    vectors = np.load(shards[1] / EMBEDDINGS_FILE)
    np.save(shards[1] / EMBEDDINGS_FILE, vectors[:-1])
    with pytest.raises(InputFormatError, match=r"emb\.npy: expected .* bytes holding shape \[115, 32\] float32"):
        build_index(shards, corpus / "collection.tsv", tmp_path / "index")
    np.save(shards[1] / EMBEDDINGS_FILE, vectors.astype(np.float16))
    with pytest.raises(InputFormatError, match=r"emb\.npy: expected .* float32"):
        build_index(shards, corpus / "collection.tsv", tmp_path / "index")
    np.save(shards[1] / EMBEDDINGS_FILE, vectors)
    write_id_text(tmp_path / "other.tsv", [("x", "y")])
    with pytest.raises(InputFormatError, match="embedding ids equal to the collection"):
        build_index(shards, tmp_path / "other.tsv", tmp_path / "index")
    ids = open_shard(shards[1])[1]
    write_ids(shards[1] / IDS_FILE, list(reversed(ids)))
    with pytest.raises(InputFormatError, match="checksum"):
        build_index(shards, corpus / "collection.tsv", tmp_path / "index")
    assert not (tmp_path / "index").exists()

    build_index(encode_sharded(corpus, 1), corpus / "collection.tsv", tmp_path / "index")
    encode_queries(str(corpus / "other_model"), [corpus / "queries.tsv"], [tmp_path / "other_q"], latency_queries=0)
    with pytest.raises(InputFormatError, match="model_fingerprint"):
        dense_search(tmp_path / "index", tmp_path / "other_q", tmp_path / "run.trec")


def test_one_job_encodes_every_split_times_the_timed_ones_and_mining_encodes_judged_queries_only(corpus, tmp_path):
    """encode_queries' rule hands one model every split: each gets the vectors it would get alone, only the
    --timed ones a latency; --judged (mining's train split) leaves out queries without a relevant judgement."""
    import subprocess
    import sys

    texts = read_queries(corpus / "queries.tsv")
    write_id_text(tmp_path / "queries.dl.tsv", list(texts.items())[:4])
    write_id_text(tmp_path / "queries.train.tsv", list(texts.items()))
    (tmp_path / "qrels.txt").write_text("q0 0 d1 1\nq3 0 d2 2\nq5 0 d3 0\n")  # q5: judged, not relevant
    outs = [tmp_path / "dev", tmp_path / "dl"]
    result = subprocess.run([sys.executable, "-m", "pipeline.dense.queries", "--model", str(corpus / "model"),
                             "--queries", str(corpus / "queries.tsv"), str(tmp_path / "queries.dl.tsv"),
                             "--out", *map(str, outs), "--timed", str(corpus / "queries.tsv"),
                             "--latency-queries", "2", "--precision", "fp32"],
                            capture_output=True, text=True, timeout=hang_guard(120))
    assert result.returncode == 0, result.stderr
    dev, dev_ids, dev_manifest = open_shard(outs[0])
    alone, alone_ids, _ = open_shard(corpus / "q")
    assert dev_ids == alone_ids and np.allclose(dev, alone, atol=1e-5)
    dl, dl_ids, dl_manifest = open_shard(outs[1])
    assert dl_ids == dev_ids[:4] and np.allclose(dl, dev[:4], atol=1e-5)
    assert dev_manifest["latency_queries"] == 2 and dl_manifest["latency_ms_median"] is None
    [train] = encode_queries(str(corpus / "model"), [tmp_path / "queries.train.tsv"], [tmp_path / "train"],
                             latency_queries=0, judged=tmp_path / "qrels.txt")
    _, train_ids, _ = open_shard(tmp_path / "train")
    assert train_ids == ["q0", "q3"] and train["unjudged_left_out"] == len(texts) - 2
    mismatched = subprocess.run([sys.executable, "-m", "pipeline.dense.queries", "--model", str(corpus / "model"),
                                 "--queries", str(corpus / "queries.tsv"), "--out", *map(str, outs)],
                                capture_output=True, text=True, timeout=hang_guard(60))
    assert mismatched.returncode == 2 and "1 --queries files but 2 --out directories" in mismatched.stderr


def test_offline_published_checkpoint_fails_with_a_message(corpus, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "pipeline.dense.queries", "--model", "castorini/tct_colbert-msmarco",
                             "--queries", str(corpus / "queries.tsv"), "--out", str(tmp_path / "q")],
                            capture_output=True, text=True, env=env, timeout=hang_guard(300))
    assert result.returncode == 2
    assert "error: cannot load model 'castorini/tct_colbert-msmarco'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "q").exists()
