"""The cross-encoder: BERT_CAT of Margin-MSE (Hofstätter et al. 2020), the teacher of its published students.

Query and passage are read together, `[CLS] query [SEP] passage [SEP]` (segment 0, then 1); a single linear
layer on the [CLS] vector gives the score. The query is cut to `query_length` word pieces first, then the
passage to what `pair_length` leaves. A published cross-encoder (a transformers BERT sequence classifier with
one label, e.g. cross-encoder/ms-marco-MiniLM-L-6-v2) is read as it was trained: BERT's pooler, then its
classifier.

EmbedDistill (Kim et al. 2023) scores a cross-encoder by *dual pooling* instead, to give a dual-encoder student
embeddings to match. Its paper was not reachable to check the details; the choices here: the last hidden states
are averaged over each segment, `[CLS] query [SEP]` for the query and `passage [SEP]` for the passage (as the
PoolAvg student averages every token of its input), and the score is the inner product of the two means (as the
student scores), with no head. Training is the same RankNet loss either way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BatchEncoding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pipeline.models.backbone import CONVENTIONS_FILE, load_backbone, masked_mean, resolve_backbone

KIND = "cross_encoder"
HEAD_FILE = "cross_encoder_head.safetensors"
SCORERS = ("cls", "dual_pooling")  # a head on [CLS] (BERT_CAT), or the inner product of the segments' means


@dataclass(frozen=True)
class PairLengths:
    query_length: int = 30  # word pieces of the query, before the pair's special tokens
    pair_length: int = 230  # the whole input, [CLS] and both [SEP] included


class CrossEncoder(nn.Module):
    def __init__(self, bert: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, head: nn.Linear | None,
                 lengths: PairLengths = PairLengths(), pooled: bool = False):
        super().__init__()
        self.bert, self.tokenizer, self.head, self.lengths, self.pooled = bert, tokenizer, head, lengths, pooled

    @property
    def scorer(self) -> str:
        return "cls" if self.head is not None else "dual_pooling"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        """(B,) scores of tokenised pairs."""
        if self.head is None:
            queries, passages = self.pooled_segments(input_ids, attention_mask, token_type_ids)
            return (queries.float() * passages.float()).sum(-1)  # float32 under autocast, as PairTargets
        output = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        vector = output.pooler_output if self.pooled else output.last_hidden_state[:, 0]
        return self.head(vector).squeeze(-1)

    def pooled_segments(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dual pooling: (B, h) means of the last hidden states over `[CLS] query [SEP]` and over `passage [SEP]`."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        query_mask = attention_mask * (token_type_ids == 0)
        return masked_mean(hidden, query_mask, 0), masked_mean(hidden, attention_mask * token_type_ids, 0)

    def tokenize(self, queries: list[str], passages: list[str]) -> BatchEncoding:
        pieces = [self.tokenizer.tokenize(query)[: self.lengths.query_length] for query in queries]
        short = [self.tokenizer.convert_tokens_to_string(piece) for piece in pieces]
        return self.tokenizer(short, passages, max_length=self.lengths.pair_length, truncation="only_second",
                              padding="longest", return_tensors="pt", return_token_type_ids=True)

    def score(self, queries: list[str], passages: list[str]) -> torch.Tensor:
        tokens = self.tokenize(queries, passages).to(self.bert.device)
        return self(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])

    def embed(self, queries: list[str], passages: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The dual-pooling scorer's query and passage vectors of each pair (their inner product is the score)."""
        if self.head is not None:
            raise ValueError("only a cross-encoder with the dual-pooling scorer has embeddings to match")
        tokens = self.tokenize(queries, passages).to(self.bert.device)
        return self.pooled_segments(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])

    def save(self, directory: Path) -> None:
        """BERT and its tokenizer as transformers saves them, the head beside them, and the lengths."""
        directory = Path(directory)
        self.bert.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        if self.head is not None:
            save_file({name: tensor.contiguous() for name, tensor in self.head.state_dict().items()},
                      directory / HEAD_FILE)
        payload = {"kind": KIND, "lengths": asdict(self.lengths), "pooled": self.pooled,
                   **({"scorer": self.scorer} if self.head is None else {})}  # cls unsaid: saved models stay alike
        (directory / CONVENTIONS_FILE).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, spec: str | Path, lengths: PairLengths | None = None) -> CrossEncoder:
        """One saved by this module, or a published BERT sequence classifier with one label (Hub id or
        directory); `lengths` defaults to the saved ones (Margin-MSE's for a published model)."""
        directory = Path(resolve_backbone(str(spec)))
        if (directory / CONVENTIONS_FILE).is_file():
            payload = json.loads((directory / CONVENTIONS_FILE).read_text())
            if payload.get("kind") != KIND:
                raise ValueError(f"{directory} holds a {payload.get('kind')} model, not a cross-encoder")
            bert, tokenizer = load_backbone(str(directory))
            head = None
            if payload.get("scorer", "cls") == "cls":
                head = nn.Linear(bert.config.hidden_size, 1)
                head.load_state_dict(load_file(directory / HEAD_FILE))
            return cls(bert, tokenizer, head, lengths or PairLengths(**payload["lengths"]), payload["pooled"])
        config = AutoConfig.from_pretrained(str(spec))
        if config.model_type != "bert" or config.num_labels != 1:
            raise ValueError(f"{spec}: a published cross-encoder must be a BERT sequence classifier with one label "
                             f"(got model_type {config.model_type!r}, {config.num_labels} labels)")
        classifier = AutoModelForSequenceClassification.from_pretrained(str(spec))
        _, tokenizer = load_backbone(str(spec))
        return cls(classifier.bert, tokenizer, classifier.classifier, lengths or PairLengths(), pooled=True)

    @classmethod
    def from_backbone(cls, spec: str, lengths: PairLengths = PairLengths(), scorer: str = "cls") -> CrossEncoder:
        """A BERT backbone with a fresh head (initialised from the current torch seed), or none for dual pooling."""
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, not {scorer!r}")
        bert, tokenizer = load_backbone(spec)
        return cls(bert, tokenizer, nn.Linear(bert.config.hidden_size, 1) if scorer == "cls" else None, lengths)
