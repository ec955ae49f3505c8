"""The student: BERT, no projection, average pooling over tokens (PoolAvg), dot-product score."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.models.backbone import (
    CONVENTIONS_FILE,
    Conventions,
    load_backbone,
    load_conventions,
    masked_mean,
    save_conventions,
    tokenize_passages,
    tokenize_queries,
)

KIND = "biencoder"


class BiEncoder(nn.Module):
    def __init__(self, bert: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conv: Conventions = Conventions()):
        super().__init__()
        self.bert, self.tokenizer, self.conv = bert, tokenizer, conv

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings (batch, hidden) of already tokenised queries or passages."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return masked_mean(hidden, attention_mask, self.conv.pool_start)

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        tokens = tokenize_queries(self.tokenizer, queries, self.conv).to(self.bert.device)
        return self(tokens["input_ids"], tokens["attention_mask"])

    def encode_passages(self, passages: list[str]) -> torch.Tensor:
        tokens = tokenize_passages(self.tokenizer, passages, self.conv).to(self.bert.device)
        return self(tokens["input_ids"], tokens["attention_mask"])

    def save(self, directory: Path) -> None:
        """A plain transformers BertModel directory (safetensors) plus our conventions file."""
        self.bert.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        save_conventions(directory, KIND, self.conv)

    @classmethod
    def load(cls, directory: Path) -> BiEncoder:
        conv, _ = load_conventions(directory, KIND)
        return cls(*load_backbone(str(directory)), conv)

    @classmethod
    def load_any(cls, spec: str) -> BiEncoder:
        """Our saved student, or a published TCT-ColBERT checkpoint (Hub id or directory without our
        conventions file, e.g. castorini/tct_colbert-msmarco), read with pyserini's conventions."""
        if (Path(spec) / CONVENTIONS_FILE).is_file():
            return cls.load(Path(spec))
        return cls(*load_backbone(spec), Conventions())

    @classmethod
    def from_backbone(cls, spec: str, conv: Conventions = Conventions()) -> BiEncoder:
        return cls(*load_backbone(spec), conv)
