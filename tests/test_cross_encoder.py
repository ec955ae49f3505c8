"""The cross-encoder (BERT_CAT): its input layout and score by hand, a published classifier read as trained, and
its training stage."""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from pipeline.formats import read_collection, read_queries, read_triples
from pipeline.models.biencoder import BiEncoder
from pipeline.models.cross_encoder import CrossEncoder, PairLengths
from pipeline.train.cross_encoder import main, ranknet_loss
from pipeline.train.loop import LoopConfig
from pipeline.train.resume import load_checkpoint
from pipeline.train.student import train_student
from pipeline.train.targets import PairTargets
from tests.conftest import make_tiny_bert, make_triples_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("cross_encoder") / "bert")


def test_a_pair_is_scored_as_the_formula_says(tiny):
    """score = w . h_[CLS] + b over [CLS] query [SEP] passage [SEP], segments 0 then 1; the query cut first."""
    torch.manual_seed(0)
    model = CrossEncoder.from_backbone(str(tiny), PairLengths(query_length=2, pair_length=9)).eval()
    tokenizer = model.tokenizer
    query, passage = "apple river engine", "violin glacier falcon copper tulip comet"
    ids = tokenizer.convert_tokens_to_ids
    expected = ["[CLS]", "apple", "river", "[SEP]", "violin", "glacier", "falcon", "copper", "[SEP]"]
    tokens = model.tokenize([query], [passage])
    assert tokens["input_ids"][0].tolist() == ids(expected)
    assert tokens["token_type_ids"][0].tolist() == [0] * 4 + [1] * 5
    with torch.no_grad():
        hidden = model.bert(input_ids=torch.tensor([ids(expected)]),
                            token_type_ids=torch.tensor([[0] * 4 + [1] * 5])).last_hidden_state[0, 0]
        by_hand = hidden @ model.head.weight[0] + model.head.bias[0]
        assert torch.allclose(model.score([query], [passage])[0], by_hand, atol=1e-5)


def test_a_published_classifier_scores_as_its_logits(tmp_path, tiny):
    """A transformers BERT classifier with one label (as cross-encoder/ms-marco-*): its pooler and classifier."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = BertConfig.from_pretrained(tiny, num_labels=1)
    torch.manual_seed(1)
    published = BertForSequenceClassification(config).eval()
    published.save_pretrained(tmp_path / "published")
    tokenizer.save_pretrained(tmp_path / "published")
    model = CrossEncoder.load(tmp_path / "published").eval()
    queries, passages = ["apple river", "comet"], ["violin glacier", "harbor lantern canyon"]
    with torch.no_grad():
        logits = published(**tokenizer(queries, passages, padding=True, return_tensors="pt")).logits[:, 0]
        assert torch.allclose(model.score(queries, passages), logits, atol=1e-5)
    config = BertConfig.from_pretrained(tiny, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="one label"):
        CrossEncoder.load(tmp_path / "two")


def test_ranknet_loss_is_the_pairwise_cross_entropy():
    positive, negative = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    pairs = torch.stack([positive, negative], dim=1)
    expected = torch.nn.functional.cross_entropy(pairs, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(ranknet_loss(positive, negative), expected)


def test_training_saves_a_model_that_scores_as_it_did(tmp_path, tiny):
    data = make_triples_dataset(tmp_path / "data")
    main(["--backbone", str(tiny), "--triples", str(data["triples"]), "--queries", str(data["queries"]),
          "--collection", str(data["collection"]), "--out", str(tmp_path / "ce"), "--checkpoints",
          str(tmp_path / "ck"), "--losses", str(tmp_path / "losses.csv"), "--steps", "3", "--batch-size", "4",
          "--lr", "1e-3", "--max-query-length", "8", "--pair-length", "40"])
    rows = list(csv.DictReader((tmp_path / "losses.csv").open()))
    assert [row["step"] for row in rows] == ["1", "2", "3"]
    loaded = CrossEncoder.load(tmp_path / "ce")
    assert loaded.lengths == PairLengths(8, 40) and not loaded.pooled
    trained = load_checkpoint(tmp_path / "ck" / "step-00000003.pt")["model"]
    saved = loaded.state_dict()
    assert trained.keys() == saved.keys() and all(torch.equal(trained[k], saved[k]) for k in saved)
    assert not torch.equal(trained["head.weight"], CrossEncoder.from_backbone(str(tiny)).head.weight)


def test_margin_mse_from_a_score_file_equals_the_online_cross_encoder(tmp_path, tiny):
    """A student taught by a file of the cross-encoder's scores, in the authors' format, ends with the weights of
    one taught by the same cross-encoder online (up to float error: pairs are batched differently)."""
    data = make_triples_dataset(tmp_path / "data")
    torch.manual_seed(0)
    CrossEncoder.from_backbone(str(tiny)).save(tmp_path / "ce")
    scorer = CrossEncoder.load(tmp_path / "ce").eval()
    queries, passages = read_queries(data["queries"]), dict(read_collection(data["collection"]))
    triples = read_triples(data["triples"])
    with torch.no_grad():
        positive = scorer.score([queries[q] for q, _, _ in triples], [passages[p] for _, p, _ in triples])
        negative = scorer.score([queries[q] for q, _, _ in triples], [passages[n] for _, _, n in triples])
    (tmp_path / "scores.tsv").write_text("".join(f"{s:.9g}\t{t:.9g}\t{q}\t{p}\t{n}\n" for s, t, (q, p, n)
                                                 in zip(positive.tolist(), negative.tolist(), triples, strict=True)))
    cfg = LoopConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=0, checkpoint_every=100)
    trained = {}
    for name, source in (("file", {"teacher_scores": tmp_path / "scores.tsv"}),
                         ("online", {"cross_encoder": tmp_path / "ce"})):
        train_student(None, data["triples"], data["queries"], data["collection"], tmp_path / name,
                      tmp_path / f"ck_{name}", tmp_path / f"{name}.csv", cfg, "margin_mse", gamma=0.0,
                      init="backbone", backbone=str(tiny), **source)
        trained[name] = BiEncoder.load(tmp_path / name).state_dict()
    start = BiEncoder.from_backbone(str(tiny)).state_dict()
    moved = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(trained["file"][moved], start[moved])
    assert all(torch.allclose(trained["file"][k], trained["online"][k], atol=1e-5) for k in start)
    with pytest.raises(ValueError, match="not both"):
        train_student(None, data["triples"], data["queries"], data["collection"], tmp_path / "both",
                      tmp_path / "ck_both", tmp_path / "both.csv", cfg, "margin_mse", init="backbone",
                      backbone=str(tiny), teacher_scores=tmp_path / "scores.tsv", cross_encoder=tmp_path / "ce")


def test_dual_pooling_scores_the_inner_product_of_the_segments_means(tmp_path, tiny):
    """EmbedDistill's scorer: mean of the last hidden states over [CLS] query [SEP] and over passage [SEP] (padding
    left out), their inner product the score; saved and loaded without a head."""
    torch.manual_seed(0)
    model = CrossEncoder.from_backbone(str(tiny), PairLengths(4, 16), scorer="dual_pooling").eval()
    assert model.head is None and model.scorer == "dual_pooling"
    queries, passages = ["apple river", "comet"], ["violin glacier falcon", "harbor"]
    with torch.no_grad():
        for query, passage, score in zip(queries, passages, model.score(queries, passages), strict=True):
            tokens = model.tokenize([query], [passage])  # alone: no padding
            hidden = model.bert(**tokens).last_hidden_state[0]
            segment = tokens["token_type_ids"][0]
            by_hand = hidden[segment == 0].mean(0) @ hidden[segment == 1].mean(0)
            assert torch.allclose(score, by_hand, atol=1e-5)
        query_vectors, passage_vectors = model.embed(queries, passages)
        assert torch.allclose((query_vectors * passage_vectors).sum(-1), model.score(queries, passages), atol=1e-5)
    model.save(tmp_path / "dual")
    loaded = CrossEncoder.load(tmp_path / "dual").eval()
    assert loaded.scorer == "dual_pooling" and not (tmp_path / "dual" / "cross_encoder_head.safetensors").exists()
    with torch.no_grad():
        assert torch.allclose(loaded.score(queries, passages), model.score(queries, passages), atol=1e-6)
    with pytest.raises(ValueError, match="dual-pooling"):
        CrossEncoder.from_backbone(str(tiny)).embed(queries, passages)


def test_embedding_matching_from_the_dual_pooling_cross_encoder(tmp_path, tiny):
    """The student learns Margin-MSE from the dual-pooling scores plus the squared distance of its mapped vectors to
    the pooled ones (the query's: the mean over its two pairs); a [CLS] cross-encoder has none to match."""
    data = make_triples_dataset(tmp_path / "data")
    torch.manual_seed(0)
    CrossEncoder.from_backbone(str(tiny), scorer="dual_pooling").save(tmp_path / "dual")
    dual = CrossEncoder.load(tmp_path / "dual").eval()
    queries, positives, negatives = ["apple river", "comet"], ["violin glacier", "harbor"], ["tulip", "marble saddle"]
    with torch.no_grad():
        targets = PairTargets.of(dual, queries, positives, negatives)
        query_pos, passage_pos = dual.embed(queries, positives)
        query_neg, passage_neg = dual.embed(queries, negatives)
    assert torch.allclose(targets.pairs[:, 0], (query_pos * passage_pos).sum(-1), atol=1e-5)
    assert torch.allclose(targets.pairs[:, 1], (query_neg * passage_neg).sum(-1), atol=1e-5)
    mapped_queries, mapped_passages = torch.randn(2, 32), torch.randn(4, 32)
    by_hand = (((mapped_queries - (query_pos + query_neg) / 2) ** 2).sum(-1).mean()
               + ((mapped_passages - torch.cat([passage_pos, passage_neg])) ** 2).sum(-1).mean()) / 2
    assert torch.allclose(targets.matching_loss(mapped_queries, mapped_passages), by_hand, atol=1e-4)
    cfg = LoopConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=100)
    common = dict(init="backbone", backbone=str(tiny), embed_weight=1.0)
    train_student(None, data["triples"], data["queries"], data["collection"], tmp_path / "student", tmp_path / "ck",
                  tmp_path / "student.csv", cfg, "margin_mse", gamma=0.0, cross_encoder=tmp_path / "dual", **common)
    assert [row["step"] for row in csv.DictReader((tmp_path / "student.csv").open())] == ["1", "2"]
    CrossEncoder.from_backbone(str(tiny)).save(tmp_path / "cls")
    with pytest.raises(ValueError, match="dual-pooling scorer"):
        train_student(None, data["triples"], data["queries"], data["collection"], tmp_path / "s2", tmp_path / "ck2",
                      tmp_path / "s2.csv", cfg, "margin_mse", cross_encoder=tmp_path / "cls", **common)
