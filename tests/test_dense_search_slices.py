"""Sliced (GPU-sized) flat search merges to the same top-k as the whole index; the GPU branch refuses clearly.

No GPU here: slicing runs on the CPU, which is the code path the GPU one shares (bounds, row offsets,
merge). The GPU clone itself is only reached with faiss-gpu and a visible device.
"""

import itertools
import json
import logging

import faiss
import numpy as np
import pytest

from pipeline.cli import run_stage
from pipeline.dense.index import build_index
from pipeline.dense.search import Searcher, dense_search, gpu_slices, main, resolve_device, slice_bounds
from pipeline.formats import read_run
from tests.test_dense import corpus, encode_sharded  # the module-scoped corpus fixture: tiny BERT encodings

__all__ = ["corpus"]  # re-exported so pytest finds the fixture in this module
NO_GPU = pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is visible: the no-GPU error cannot happen")


@pytest.fixture(scope="module")
def flat(corpus):
    """A flat index over the 230 encoded passages, built in 2 shards (as the DAG does)."""
    build_index(encode_sharded(corpus, 2), corpus / "collection.tsv", corpus / "flat")
    return corpus / "flat"


@pytest.mark.parametrize(("slices", "hits"), [(7, 50), (4, 1000), (230, 20), (3, 100)])
def test_sliced_run_equals_the_whole_index(corpus, flat, slices, hits):
    # 7 and 3 do not divide 230; 50 > the 32-33 rows of a slice; 1000 > the corpus; 230 = one row per slice.
    dense_search(flat, corpus / "q", corpus / "whole.trec", hits=hits, latency_queries=0)
    timing = dense_search(flat, corpus / "q", corpus / "sliced.trec", hits=hits, latency_queries=2,
                          search_shards=slices)
    whole, sliced = read_run(corpus / "whole.trec"), read_run(corpus / "sliced.trec")
    assert whole.keys() == sliced.keys()
    for qid in whole:
        assert list(sliced[qid]) == list(whole[qid])  # same passages in the same order
        assert list(sliced[qid].values()) == pytest.approx(list(whole[qid].values()), abs=1e-5)
        assert len(sliced[qid]) == min(hits, 230)
    assert timing["search_shards"] == slices and timing["device"] == "cpu" and timing["search_ms_median"] > 0
    assert json.loads((corpus / "sliced.latency.json").read_text())["search_shards"] == slices


@pytest.mark.parametrize("queries", [5, 40])  # Faiss's per-query heap path and its BLAS path (>= 20 queries)
def test_merge_with_exact_ties_keeps_the_whole_index_top_k(queries):
    # Small integer vectors: every dot product is exact in float32, and ties are everywhere.
    rng = np.random.default_rng(queries)
    xb = rng.integers(-1, 2, size=(301, 8)).astype(np.float32)
    xq = rng.integers(-1, 2, size=(queries, 8)).astype(np.float32)
    index = faiss.IndexFlatIP(8)
    index.add(xb)
    exact = xq @ xb.T
    for k in (1, 10, 64, 301):
        whole = Searcher(index).search(xq, k)
        for slices in (2, 7, 300):  # 7 does not divide 301; k = 64 is larger than a slice of 43
            scores, rows = Searcher(index, search_shards=slices, batch_size=16).search(xq, k)
            assert scores.dtype == np.float32 and rows.dtype == np.int64
            np.testing.assert_array_equal(scores, whole[0])
            np.testing.assert_array_equal(scores, np.take_along_axis(exact, rows, 1))  # true scores, no padding
            np.testing.assert_array_equal(scores, -np.sort(-exact, axis=1)[:, :k])
            for q in range(queries):
                # Above the k-th score the top-k is determined, and exact ties come by lower row in both;
                # which members of a tie group straddling the k-th place are kept is Faiss's heap choice.
                above = scores[q] > scores[q, -1]
                np.testing.assert_array_equal(rows[q, above], whole[1][q, above])
                for score in np.unique(scores[q]):
                    tied = rows[q, scores[q] == score]
                    assert list(tied) == sorted(tied) and len(set(tied)) == len(tied)


def test_slices_apply_to_flat_indexes_only(caplog):
    xb = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    hnsw = faiss.IndexHNSWFlat(8, 8, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(xb)
    with caplog.at_level(logging.WARNING, logger="pipeline.dense.search"):
        assert len(Searcher(hnsw, search_shards=4).bounds) == 1
    assert "flat indexes only" in caplog.text
    flat = faiss.IndexFlatIP(8)
    flat.add(xb)
    assert len(Searcher(flat).bounds) == 1  # auto on the CPU: no slicing
    assert len(Searcher(flat, search_shards=500).bounds) == 100  # never more slices than rows


def test_slice_bounds_and_gpu_budget():
    bounds = slice_bounds(230, 7)
    assert bounds[0][0] == 0 and bounds[-1][1] == 230
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert {end - start for start, end in bounds} == {32, 33}
    assert slice_bounds(5, 9) == [(i, i + 1) for i in range(5)]
    # MS MARCO passage, 768-d float32 = 27.2 GB: two slices on a 16 GB budget, one in float16 or on 2 GPUs.
    assert gpu_slices(8_841_823, 768, False, 16 << 30) == 2
    assert gpu_slices(8_841_823, 768, True, 16 << 30) == 1
    assert gpu_slices(8_841_823, 768, False, 16 << 30, gpus=2) == 1
    assert gpu_slices(8_841_823, 768, True, 4 << 30) == 4


@NO_GPU
def test_gpu_without_gpus_is_a_one_line_error(corpus, flat, capsys):
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="Faiss sees no GPU"):
        dense_search(flat, corpus / "q", corpus / "gpu.trec", device="gpu")
    assert not (corpus / "gpu.trec").exists()
    with pytest.raises(SystemExit) as stopped:
        run_stage(lambda: main(["--index", str(flat), "--queries", str(corpus / "q"), "--run",
                                str(corpus / "gpu.trec"), "--device", "gpu", "--fp16"]))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'gpu' asked for, but Faiss sees no GPU") and err.count("\n") == 1
    assert not (corpus / "gpu.trec").exists()
