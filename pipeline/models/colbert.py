"""The teacher: ColBERT v1 (Khattab & Zaharia 2020) with late interaction (MaxSim).

BERT -> linear to `dim` (128) -> L2 normalisation; score(q, d) = sum over query tokens of the max
dot product over document tokens. Queries carry the [Q] marker and [MASK] augmentation (all their
positions take part); documents carry the [D] marker, and their padding and punctuation tokens are
excluded from the max, as in ColBERT v1. Tokenisation is shared with the student (see backbone.py).
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.models.backbone import (
    Conventions,
    load_backbone,
    load_conventions,
    save_conventions,
    tokenize_passages,
    tokenize_queries,
)

KIND = "colbert"
HEAD_FILE = "colbert_linear.safetensors"


def maxsim(queries: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor, doc_mask: torch.Tensor) -> torch.Tensor:
    """All-pairs late interaction: (B, Lq, h) queries x (N, Ld, h) documents -> (B, N) float32 scores.

    Masked document tokens never win the max; masked query tokens add nothing. A document with no
    unmasked token scores 0 for every query token. Computed in float32 with autocast off, whatever
    the embeddings' dtype: TCT's teacher (unnormalised queries) scores 60-90, where bf16 steps by 0.5,
    and distillation divides the scores by tau = 0.25.
    """
    with torch.autocast(queries.device.type, enabled=False):
        sim = torch.einsum("bqh,nph->bnqp", queries.float(), docs.float())
        sim = sim.masked_fill(~doc_mask.bool()[None, :, None, :], float("-inf"))
        best = sim.amax(dim=-1).nan_to_num(neginf=0.0)
        return (best * query_mask.to(best.dtype)[:, None, :]).sum(-1)


def pad_tokens(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Token-level tensors (N_i, L_i, ...) of several batches, zero-padded to one length L: embeddings
    padded so, and their masks padded with False, give MaxSim the scores they give unpadded."""
    length = max(part.shape[1] for part in parts)
    return [F.pad(part, (0, 0) * (part.dim() - 2) + (0, length - part.shape[1])) for part in parts]


def punctuation_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Word-piece ids of single punctuation characters (ColBERT v1's document skiplist)."""
    ids = {tokenizer.convert_tokens_to_ids(symbol) for symbol in string.punctuation}
    return sorted(i for i in ids if i != tokenizer.unk_token_id)


class ColBERT(nn.Module):
    def __init__(self, bert: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conv: Conventions = Conventions(),
                 dim: int = 128, bias: bool = False, normalize_queries: bool = True):
        super().__init__()
        self.bert, self.tokenizer, self.conv = bert, tokenizer, conv
        self.linear = nn.Linear(bert.config.hidden_size, dim, bias=bias)
        self.normalize_queries = normalize_queries
        self.register_buffer("skiplist", torch.tensor(punctuation_ids(tokenizer)), persistent=False)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden): BERT's last layer, before the projection."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def query_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, Lq, dim); normalised unless `normalize_queries` is off (the released TCT teacher)."""
        embeddings = self.linear(self.hidden_states(input_ids, attention_mask))
        return F.normalize(embeddings, dim=-1) if self.normalize_queries else embeddings

    def doc_embeddings(self, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, Ld, dim) normalised embeddings and the mask of tokens that take part in MaxSim."""
        mask = attention_mask.bool() & ~torch.isin(input_ids, self.skiplist)
        return F.normalize(self.linear(self.hidden_states(input_ids, attention_mask)), dim=-1), mask

    def forward(self, query_tokens: dict, doc_tokens: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The token vectors MaxSim reads: queries (B, Lq, dim), documents (N, Ld, dim) and the documents'
        MaxSim mask. Training differentiates these (through DDP's forward, so not through `score`)."""
        queries = self.query_embeddings(query_tokens["input_ids"], query_tokens["attention_mask"])
        return (queries, *self.doc_embeddings(doc_tokens["input_ids"], doc_tokens["attention_mask"]))

    def score(self, query_tokens: dict, doc_tokens: dict) -> torch.Tensor:
        """(B, N) MaxSim scores of every query against every document (tokenised inputs)."""
        queries, docs, doc_mask = self(query_tokens, doc_tokens)
        return maxsim(queries, query_tokens["attention_mask"], docs, doc_mask)

    def score_texts(self, queries: list[str], passages: list[str]) -> torch.Tensor:
        device = self.linear.weight.device
        return self.score(tokenize_queries(self.tokenizer, queries, self.conv).to(device),
                          tokenize_passages(self.tokenizer, passages, self.conv).to(device))

    def save(self, directory: Path) -> None:
        self.bert.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        save_file({k: v.contiguous() for k, v in self.linear.state_dict().items()}, str(Path(directory) / HEAD_FILE))
        save_conventions(directory, KIND, self.conv, dim=self.linear.out_features,
                         bias=self.linear.bias is not None, normalize_queries=self.normalize_queries)

    @classmethod
    def load(cls, directory: Path) -> ColBERT:
        conv, payload = load_conventions(directory, KIND)
        model = cls(*load_backbone(str(directory)), conv, dim=payload["dim"], bias=payload["bias"],
                    normalize_queries=payload["normalize_queries"])
        model.linear.load_state_dict(load_file(str(Path(directory) / HEAD_FILE)))
        return model

    @classmethod
    def from_backbone(cls, spec: str, conv: Conventions = Conventions(), **kwargs) -> ColBERT:
        return cls(*load_backbone(spec), conv, **kwargs)
