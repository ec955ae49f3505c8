import csv
import json
from pathlib import Path

import pytest
import torch

from pipeline.cli import ModelUnavailable
from pipeline.doc2query import generate as generate_module
from pipeline.doc2query.expand import expand_collection
from pipeline.doc2query.generate import generate_queries, shard_path
from pipeline.doc2query.model import ScratchT5, encode_sources, load_seq2seq, scratch_t5
from pipeline.doc2query.train import main as train_main
from pipeline.doc2query.train import read_pairs, train_doc2query
from pipeline.formats import InputFormatError, clean_text, read_collection, read_predictions, read_run, write_id_text
from pipeline.models.backbone import PACKAGED_MINILM, resolve_backbone
from pipeline.train.loop import LoopConfig

TINY = ScratchT5(d_model=32, encoder_layers=1, decoder_layers=1, heads=2, d_ff=64, dropout=0.0)
PASSAGES = {"p0": "the old water mill on the river grinds grain", "p1": "energy prices rise as energy demand grows",
            "p2": "a recipe for bread with flour and grain", "p3": "the football season starts in august",
            "p4": "glaciers carve deep valleys into the mountains"}


def jsonl(records, ensure_ascii: bool = True) -> str:
    return "".join(json.dumps({"id": pid, "predicted_queries": queries}, ensure_ascii=ensure_ascii) + "\n"
                   for pid, queries in records)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("t5") / "model"
    torch.manual_seed(0)
    model, tokenizer = scratch_t5(PACKAGED_MINILM, TINY)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def collection(tmp_path) -> Path:
    write_id_text(tmp_path / "collection.tsv", PASSAGES.items())
    return tmp_path / "collection.tsv"


# -- the official format (its downloads: tests/test_doc2query_release.py) -------------------------

@pytest.mark.realdata
def test_the_real_sample_reads():
    from tests.conftest import shared_data

    [(pid, queries)] = list(read_predictions(shared_data("msmarco-samples", "doc2query-t5.sample.jsonl")))
    assert pid == "0" and len(queries) == 80


@pytest.mark.parametrize(("content", "line", "message"), [
    ('{"id": "0", "predicted_queries": ["q"]}\n{"id": "1", "predicted_queries": [\n', 2, "a JSON object"),
    ('{"id": "0", "predicted_queries": ["q"]}\n{"id": "1"}\n', 2, '"predicted_queries"'),
    ('{"id": "0", "predicted_queries": "q"}\n', 1, "a list of strings"),
    ('{"id": "0", "predicted_queries": ["q"]}\n\n', 2, "a JSON object"),
    ('{"id": "0", "predicted_queries": ["q"]}\n{"id": "1", "predicted_queries": ["q"]}\n{"id": "2", "predic',
     3, "truncated"),
])
def test_reader_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text(content)
    with pytest.raises(InputFormatError, match=message) as caught:
        list(read_predictions(path))
    assert caught.value.path == str(path) and caught.value.line == line


def test_complete_last_line_without_newline_is_fine(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "0", "predicted_queries": ["q"]}')
    assert list(read_predictions(path)) == [("0", ["q"])]


# -- expansion ------------------------------------------------------------------------------------

def expanded(path: Path) -> dict[str, str]:
    return dict(read_collection(path))


def test_expansion_appends_capped_queries_in_collection_order(tmp_path, collection):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(jsonl([("p0", ["what is a\twater mill", "mill\nhistory", "third one"]),
                                  ("p1", ["energy prices"]), ("p3", [" ", "football", "beyond the cap"])]))
    counts = expand_collection(collection, predictions, tmp_path / "out.tsv", n_queries=2)
    result = expanded(tmp_path / "out.tsv")
    assert list(result) == list(PASSAGES)
    assert result["p0"] == PASSAGES["p0"] + " what is a water mill mill history"
    assert result["p1"] == PASSAGES["p1"] + " energy prices"
    assert result["p2"] == PASSAGES["p2"] and result["p4"] == PASSAGES["p4"]
    assert result["p3"] == PASSAGES["p3"] + " football"  # a blank query is dropped but counts towards the cap
    assert counts == {"passages": 5, "expanded": 3, "without_predictions": 2, "unknown_skipped": 0}
    assert all(line.count("\t") == 1 for line in (tmp_path / "out.tsv").read_text().splitlines())


def test_unknown_pid_is_an_error_or_skipped(tmp_path, collection):
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(jsonl([("p0", ["a"]), ("nope", ["b"]), ("p1", ["c"])]))
    with pytest.raises(InputFormatError, match="nope is not in it") as caught:
        expand_collection(collection, predictions, tmp_path / "out.tsv", n_queries=5)
    assert caught.value.path == str(predictions) and caught.value.line == 2
    assert not (tmp_path / "out.tsv").exists()
    counts = expand_collection(collection, predictions, tmp_path / "out.tsv", n_queries=5, unknown="skip")
    assert counts["unknown_skipped"] == 1 and counts["expanded"] == 2
    assert expanded(tmp_path / "out.tsv")["p1"] == PASSAGES["p1"] + " c"


def test_any_order_and_several_files_give_the_same_expansion(tmp_path, collection):
    records = [(pid, [f"query for {pid}"]) for pid in PASSAGES]
    (tmp_path / "ordered.jsonl").write_text(jsonl(records))
    (tmp_path / "reversed.jsonl").write_text(jsonl(records[::-1]))
    (tmp_path / "a.jsonl").write_text(jsonl(records[:2]))
    (tmp_path / "b.jsonl").write_text(jsonl(records[2:]))
    expand_collection(collection, tmp_path / "ordered.jsonl", tmp_path / "1.tsv")
    expand_collection(collection, tmp_path / "reversed.jsonl", tmp_path / "2.tsv")
    expand_collection(collection, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "3.tsv")
    assert (tmp_path / "1.tsv").read_text() == (tmp_path / "2.tsv").read_text() == (tmp_path / "3.tsv").read_text()
    (tmp_path / "dup.jsonl").write_text(jsonl([*records, records[1]]))
    with pytest.raises(InputFormatError, match="p1 appeared before") as caught:
        expand_collection(collection, tmp_path / "dup.jsonl", tmp_path / "4.tsv")
    assert caught.value.line == 6


def test_expansion_lets_bm25_find_the_passage(tmp_path, collection):
    """A query term that only a predicted query contains: not retrieved before, rank 1 after."""
    from pipeline.sparse.index import build_bm25_index
    from pipeline.sparse.search import bm25_search

    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(jsonl([("p0", ["how does a water mill produce energy", "what is hydropower"])]))
    expand_collection(collection, predictions, tmp_path / "expanded.tsv", n_queries=2)
    write_id_text(tmp_path / "queries.tsv", [("q1", "hydropower"), ("q2", "mill energy")])
    runs = {}
    for name in ("collection", "expanded"):
        build_bm25_index(tmp_path / f"{name}.tsv", tmp_path / f"index-{name}")
        bm25_search(tmp_path / f"index-{name}", tmp_path / "queries.tsv", tmp_path / f"{name}.trec", hits=10,
                    latency_queries=0)
        runs[name] = read_run(tmp_path / f"{name}.trec")
    before, after = runs["collection"], runs["expanded"]
    assert "p0" not in before.get("q1", {})
    assert max(after["q1"], key=after["q1"].get) == "p0"
    assert max(before["q2"], key=before["q2"].get) == "p1"  # "energy" twice beats "mill" once
    assert max(after["q2"], key=after["q2"].get) == "p0" and after["q2"]["p0"] > before["q2"]["p0"]


# -- generation -----------------------------------------------------------------------------------

GEN = {"n_samples": 3, "batch_size": 2, "max_source_length": 32, "max_target_length": 8, "seed": 7,
       "precision": "fp32"}


def test_generation_is_seeded_and_gives_n_queries_per_passage(tiny_t5, collection, tmp_path):
    first = generate_queries(str(tiny_t5), collection, tmp_path / "a", **GEN)
    generate_queries(str(tiny_t5), collection, tmp_path / "b", **GEN)
    text = shard_path(tmp_path / "a", 0).read_text()
    assert text == shard_path(tmp_path / "b", 0).read_text()
    records = list(read_predictions(shard_path(tmp_path / "a", 0)))
    assert [pid for pid, _ in records] == list(PASSAGES)
    assert all(len(queries) == 3 for _, queries in records)
    assert first["count"] == 5 and first["passages_per_second"] > 0
    generate_queries(str(tiny_t5), collection, tmp_path / "c", **{**GEN, "seed": 8})
    assert shard_path(tmp_path / "c", 0).read_text() != text
    # Shards partition the collection in order; expand reads them as one.
    for shard in (0, 1):
        generate_queries(str(tiny_t5), collection, tmp_path / "s", shard=shard, shards=2, **GEN)
    counts = expand_collection(collection, [shard_path(tmp_path / "s", 0), shard_path(tmp_path / "s", 1)],
                               tmp_path / "expanded.tsv", n_queries=3)
    assert counts["expanded"] == 5


def test_top_1_sampling_is_transformers_greedy_decoding(tiny_t5, collection):
    """Our decoding loop against generate(): with k = 1 both must pick the same tokens."""
    model, tokenizer = load_seq2seq(str(tiny_t5))
    passages = list(PASSAGES.values())
    ours = generate_module.sample_queries(model, tokenizer, passages, 1, 1, 32, 10)
    tokens = encode_sources(tokenizer, passages, 32)
    with torch.inference_mode():
        greedy = model.generate(**tokens, do_sample=False, max_length=11)  # + the decoder start token
    assert [q for [q] in ours] == [clean_text(t) for t in tokenizer.batch_decode(greedy, skip_special_tokens=True)]


def test_killed_generation_resumes_to_the_same_output(tiny_t5, collection, tmp_path, monkeypatch):
    generate_queries(str(tiny_t5), collection, tmp_path / "whole", **GEN)
    real, calls = generate_module.sample_queries, []

    def dies_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_module, "sample_queries", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_queries(str(tiny_t5), collection, tmp_path / "killed", **GEN)
    partial = tmp_path / "killed" / "shard-0.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 4 and not shard_path(tmp_path / "killed", 0).exists()
    with open(partial, "a") as out:  # the kill also cut a record in half
        out.write('{"id": "p4", "predicted_que')
    monkeypatch.setattr(generate_module, "sample_queries", real)
    manifest = generate_queries(str(tiny_t5), collection, tmp_path / "killed", **GEN)
    assert manifest["generated_this_run"] == 1
    assert shard_path(tmp_path / "killed", 0).read_text() == shard_path(tmp_path / "whole", 0).read_text()
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["shard-0.jsonl", "shard-0.manifest.json"]
    # A complete shard with the same settings is kept without generating anything.
    monkeypatch.setattr(generate_module, "sample_queries", None)
    assert generate_queries(str(tiny_t5), collection, tmp_path / "killed", **GEN) == manifest


def test_unavailable_or_wrong_models_are_explained(tmp_path):
    with pytest.raises(ModelUnavailable, match="cannot load model"):
        load_seq2seq(str(tmp_path / "missing"))
    with pytest.raises(ModelUnavailable, match="sequence-to-sequence"):
        load_seq2seq(resolve_backbone(PACKAGED_MINILM))


# -- training -------------------------------------------------------------------------------------

def training_data(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    write_id_text(directory / "collection.tsv", PASSAGES.items())
    write_id_text(directory / "queries.tsv", [("q0", "water mill grain"), ("q1", "energy prices"),
                                              ("q2", "bread recipe"), ("q3", "football season"),
                                              ("q4", "glacier valleys")])
    lines = [f"q{i} 0 p{i} 1" for i in range(5)] + ["q0 0 p3 0"]  # a non-relevant judgement: not a pair
    (directory / "qrels.txt").write_text("\n".join(lines) + "\n")
    return {name: directory / file for name, file in
            (("collection", "collection.tsv"), ("queries", "queries.tsv"), ("qrels", "qrels.txt"))}


def loss_curve(path: Path) -> list[float]:
    with open(path) as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_scratch_training_lowers_the_loss_and_saves_a_generator(tmp_path):
    data = training_data(tmp_path / "data")
    pairs, _, _ = read_pairs(data["collection"], data["queries"], data["qrels"])
    assert pairs == [(f"q{i}", f"p{i}") for i in range(5)]
    cfg = LoopConfig(steps=15, batch_size=5, lr=3e-3, warmup_steps=0, checkpoint_every=100)
    train_doc2query(data["collection"], data["queries"], data["qrels"], tmp_path / "model", tmp_path / "ck",
                    tmp_path / "losses.csv", cfg, size=TINY, max_source_length=32, max_target_length=8)
    curve = loss_curve(tmp_path / "losses.csv")
    assert len(curve) == 15 and sum(curve[-3:]) < sum(curve[:3])
    assert (tmp_path / "model" / "model.safetensors").is_file()
    model, tokenizer = load_seq2seq(str(tmp_path / "model"))
    assert model.config.d_model == 32 and tokenizer.pad_token == "[PAD]"
    manifest = generate_queries(str(tmp_path / "model"), data["collection"], tmp_path / "gen", **GEN)
    assert manifest["count"] == 5


def test_training_cli_needs_no_triples(tmp_path):
    data = training_data(tmp_path / "data")
    train_main(["--collection", str(data["collection"]), "--queries", str(data["queries"]), "--qrels",
                str(data["qrels"]), "--out", str(tmp_path / "model"), "--checkpoints", str(tmp_path / "ck"),
                "--losses", str(tmp_path / "losses.csv"), "--steps", "2", "--batch-size", "2", "--lr", "1e-3",
                "--d-model", "32", "--encoder-layers", "1", "--decoder-layers", "1", "--heads", "2", "--d-ff", "64",
                "--max-source-length", "32", "--max-target-length", "8"])
    assert len(loss_curve(tmp_path / "losses.csv")) == 2
    assert load_seq2seq(str(tmp_path / "model"))[0].config.num_layers == 1
