"""cross_encoder_rerank: the cross-encoder's own ranking of a first-stage run's top `depth`, resumable by query."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.cross_encoder_rerank import cross_encoder_rerank, main
from pipeline.formats import read_collection, read_queries, read_run
from pipeline.models.cross_encoder import CrossEncoder, PairLengths
from tests.conftest import make_tiny_bert, make_triples_dataset


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A saved tiny cross-encoder, the hand-made data set, and a first-stage run of every query's 6 passages."""
    root = tmp_path_factory.mktemp("cross_rerank")
    torch.manual_seed(3)
    CrossEncoder.from_backbone(str(make_tiny_bert(root / "bert")), PairLengths(8, 40)).save(root / "ce")
    data = make_triples_dataset(root / "data", n_queries=6)
    pids = [pid for pid, _ in read_collection(data["collection"])]
    with open(root / "bm25.trec", "w") as out:
        for i in range(6):
            for rank, pid in enumerate(pids[i:i + 6], 1):
                out.write(f"q{i} Q0 {pid} {rank} {10.0 - rank} bm25\n")
    return root, data


def _rerank(root, data, run, **kwargs):
    return cross_encoder_rerank(str(root / "ce"), data["queries"], data["collection"], root / "bm25.trec", run,
                                depth=4, latency_queries=2, **kwargs)


def test_the_top_depth_is_ordered_by_the_cross_encoders_score(setting, tmp_path):
    root, data = setting
    record = _rerank(root, data, tmp_path / "ce.trec")
    model = CrossEncoder.load(root / "ce").eval()
    queries, passages = read_queries(data["queries"]), dict(read_collection(data["collection"]))
    first, ranked = read_run(root / "bm25.trec"), read_run(tmp_path / "ce.trec")
    assert list(ranked) == list(queries) and record["pairs"] == 24 and record["depth"] == 4
    lines = [line.split() for line in (tmp_path / "ce.trec").read_text().splitlines()]
    for qid, hits in ranked.items():
        top = sorted(first[qid], key=lambda pid: -first[qid][pid])[:4]
        assert set(hits) == set(top)
        with torch.no_grad():
            expected = model.score([queries[qid]] * 4, [passages[pid] for pid in top])
        assert [hits[pid] for pid in top] == pytest.approx(expected.tolist(), abs=1e-5)
        by_score = sorted(top, key=lambda pid: -expected[top.index(pid)].item())
        assert [line[2] for line in lines if line[0] == qid] == by_score  # in the file, best first
        assert [int(line[3]) for line in lines if line[0] == qid] == [1, 2, 3, 4]
    latency = json.loads((tmp_path / "ce.latency.json").read_text())
    assert latency["precision"] == "fp32" and latency["latency_queries"] == 2
    assert not list(tmp_path.glob("ce.trec.partial-*"))


def test_a_restarted_job_keeps_the_queries_it_finished(setting, tmp_path, monkeypatch):
    """A partial run of the same inputs is resumed: its whole queries are kept (their scores are not recomputed),
    its last query and a line cut short are redone; a partial run of other inputs is deleted."""
    root, data = setting
    _rerank(root, data, tmp_path / "full.trec")
    full = (tmp_path / "full.trec").read_text().splitlines(keepends=True)
    run = tmp_path / "ce.trec"
    # The same inputs: name the partial file as the stage does, by failing on purpose after the first query.
    calls = []
    original = CrossEncoder.score

    def counting(self, queries, passages):
        calls.append(queries[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, queries, passages)

    monkeypatch.setattr(CrossEncoder, "score", counting)
    with pytest.raises(KeyboardInterrupt):
        _rerank(root, data, run)
    (partial,) = tmp_path.glob("ce.trec.partial-*")
    doctored = full[:8]  # q0 and q1 done, q0's first score changed
    doctored[0] = doctored[0].replace(doctored[0].split()[4], "99.5")
    partial.write_text("".join(doctored) + full[8][:10])  # and q2's first line cut short
    stale = tmp_path / "ce.trec.partial-0123456789abcdef"
    stale.write_text("q0 Q0 p0 1 1.0 x\n")
    calls.clear()
    monkeypatch.setattr(CrossEncoder, "score", lambda self, q, p: (calls.append(q[0]), original(self, q, p))[1])
    _rerank(root, data, run)
    # q0 kept from the partial run; q1 (its last whole query) redone; q0 scored again only for the latency sample
    assert read_run(run)["q0"][full[0].split()[2]] == 99.5
    assert calls.count("what is the apple?") == 1 and calls.count("what is the river?") == 2
    assert not stale.exists() and not list(tmp_path.glob("ce.trec.partial-*"))


def test_candidates_outside_the_collection_are_refused(setting, tmp_path):
    root, data = setting
    (tmp_path / "bad.trec").write_text("q0 Q0 p0 1 2.0 bm25\nq0 Q0 ghost 2 1.0 bm25\n")
    with pytest.raises(ValueError, match=r"absent from .*ghost"):
        cross_encoder_rerank(str(root / "ce"), data["queries"], data["collection"], tmp_path / "bad.trec",
                             tmp_path / "out.trec")


def test_the_cli_cuts_pairs_to_the_lengths_given(setting, tmp_path, monkeypatch):
    root, data = setting
    seen = []
    original = CrossEncoder.tokenize
    monkeypatch.setattr(CrossEncoder, "tokenize",
                        lambda self, q, p: (seen.append(self.lengths), original(self, q, p))[1])
    main(["--model", str(root / "ce"), "--queries", str(data["queries"]), "--collection", str(data["collection"]),
          "--candidates", str(root / "bm25.trec"), "--run", str(tmp_path / "r.trec"), "--depth", "2",
          "--max-query-length", "3", "--pair-length", "12", "--latency-queries", "0"])
    assert set(seen) == {PairLengths(3, 12)}
    with pytest.raises(SystemExit):
        main(["--model", str(root / "ce"), "--queries", str(data["queries"]), "--collection", str(data["collection"]),
              "--candidates", str(root / "bm25.trec"), "--run", str(tmp_path / "r.trec"), "--pair-length", "12"])
