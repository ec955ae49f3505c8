import json

import numpy as np
import pytest
import torch

from pipeline.models.backbone import CONVENTIONS_FILE, Conventions, tokenize_passages, tokenize_queries
from pipeline.models.biencoder import BiEncoder
from pipeline.models.colbert import ColBERT, maxsim, punctuation_ids
from pipeline.sparse.jvm import import_pyserini
from tests.conftest import make_tiny_bert


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert"))


def reference_maxsim(q, q_mask, d, d_mask):
    """Triple loop straight from the definition: sum_i max_j q_i . d_j over unmasked tokens."""
    scores = np.zeros((q.shape[0], d.shape[0]))
    for b in range(q.shape[0]):
        for n in range(d.shape[0]):
            total = 0.0
            for i in range(q.shape[1]):
                if not q_mask[b, i]:
                    continue
                best = max((float(q[b, i] @ d[n, j]) for j in range(d.shape[1]) if d_mask[n, j]), default=0.0)
                total += best
            scores[b, n] = total
    return scores


def test_maxsim_matches_triple_loop_with_masks():
    gen = torch.Generator().manual_seed(0)
    q, d = torch.randn(3, 5, 4, generator=gen), torch.randn(4, 7, 4, generator=gen)
    q_mask = torch.ones(3, 5, dtype=torch.long)
    q_mask[1, 3:] = 0
    d_mask = torch.rand(4, 7, generator=gen) > 0.3
    d_mask[2] = False  # a document whose every token is masked scores 0
    ours = maxsim(q, q_mask, d, d_mask)
    assert np.allclose(ours.numpy(), reference_maxsim(q.numpy(), q_mask.numpy(), d.numpy(), d_mask.numpy()), atol=1e-5)
    assert torch.all(ours[:, 2] == 0)


def test_teacher_masks_padding_and_punctuation(bert_dir):
    teacher = ColBERT.from_backbone(str(bert_dir))
    tokens = tokenize_passages(teacher.tokenizer, ["cats, dogs; birds!", "one"], Conventions())
    _, mask = teacher.doc_embeddings(tokens["input_ids"], tokens["attention_mask"])
    words = [teacher.tokenizer.convert_ids_to_tokens(ids) for ids in tokens["input_ids"].tolist()]
    assert [w for w, m in zip(words[0], mask[0].tolist(), strict=True) if m] == ["[CLS]", "d", "cats", "dogs", "birds"]
    assert mask[1].sum() == 3 and not mask[1, 5:].any()  # [CLS] d one, then padding
    assert teacher.tokenizer.convert_tokens_to_ids(",") in punctuation_ids(teacher.tokenizer)
    # Documents are L2-normalised; queries too unless switched off (the released TCT teacher).
    q_tokens = tokenize_queries(teacher.tokenizer, ["what?"], Conventions())
    norms = teacher.query_embeddings(q_tokens["input_ids"], q_tokens["attention_mask"]).norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    teacher.normalize_queries = False
    raw = teacher.query_embeddings(q_tokens["input_ids"], q_tokens["attention_mask"]).norm(dim=-1)
    assert not torch.allclose(raw, torch.ones_like(raw), atol=1e-3)


def test_query_augmentation_and_prefix_tokens(bert_dir):
    student = BiEncoder.from_backbone(str(bert_dir))
    tokens = tokenize_queries(student.tokenizer, ["a short query", "x " * 50], Conventions())
    assert tokens["input_ids"].shape == (2, 36) and tokens["attention_mask"].all()
    words = student.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0].tolist())
    assert words[:7] == ["[CLS]", "[", "q", "]", "a", "short", "query"] and set(words[7:]) == {"[MASK]"}


@pytest.mark.parametrize("start", [0, 4])
def test_student_pools_from_its_configured_start(bert_dir, tmp_path, start):
    student = BiEncoder.from_backbone(str(bert_dir), Conventions(pool_start=start)).eval()
    tokens = tokenize_passages(student.tokenizer, ["a long passage about rivers", "short"], student.conv)
    with torch.no_grad():
        pooled = student(tokens["input_ids"], tokens["attention_mask"])
        hidden = student.bert(**tokens).last_hidden_state
    for row, length in enumerate(tokens["attention_mask"].sum(1).tolist()):
        assert torch.allclose(pooled[row], hidden[row, start:length].mean(0), atol=1e-6)
    student.save(tmp_path / "student")
    assert BiEncoder.load(tmp_path / "student").conv.pool_start == start  # the convention travels with the model


def test_student_equals_pyserini_tct_colbert_encoders(bert_dir, tmp_path):
    student = BiEncoder.from_backbone(str(bert_dir)).eval()
    student.save(tmp_path / "student")
    encode = import_pyserini("pyserini.encode")
    passages = ["The Manhattan Project produced the first nuclear weapons.", "short one", "a b c " * 80]
    theirs_docs = encode.TctColBertDocumentEncoder(str(tmp_path / "student"), device="cpu").encode(
        passages, max_length=154)
    query_encoder = encode.TctColBertQueryEncoder(encoder_dir=str(tmp_path / "student"), device="cpu")
    queries = ["what was the manhattan project?", "word " * 60]
    with torch.no_grad():
        ours_docs = student.encode_passages(passages).numpy()
        ours_queries = student.encode_queries(queries).numpy()
    assert np.allclose(ours_docs, theirs_docs, atol=1e-5)
    assert np.allclose(ours_queries, np.stack([query_encoder.encode(q) for q in queries]), atol=1e-5)


def test_save_load_round_trip_and_refusals(bert_dir, tmp_path):
    teacher = ColBERT.from_backbone(str(bert_dir), dim=16, bias=True, normalize_queries=False).eval()
    teacher.save(tmp_path / "teacher")
    again = ColBERT.load(tmp_path / "teacher").eval()
    with torch.no_grad():
        assert torch.equal(teacher.score_texts(["q one"], ["p one", "p two"]),
                           again.score_texts(["q one"], ["p one", "p two"]))
    assert again.linear.out_features == 16 and again.linear.bias is not None and not again.normalize_queries
    with pytest.raises(ValueError, match="holds a 'colbert' model, expected 'biencoder'"):
        BiEncoder.load(tmp_path / "teacher")
    payload = json.loads((tmp_path / "teacher" / CONVENTIONS_FILE).read_text())
    (tmp_path / "teacher" / CONVENTIONS_FILE).write_text(json.dumps({**payload, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        ColBERT.load(tmp_path / "teacher")
    with pytest.raises(ValueError, match="not a biencoder saved by this pipeline"):
        BiEncoder.load(bert_dir)
