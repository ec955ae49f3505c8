"""The doc2query seq2seq model: loading, a small T5 from scratch, and the (passage -> query) encoding.

Training and generation share these, so a model trained here is read back exactly as it was trained:
the passage goes in as the tokenizer encodes it (T5: `text </s>`; a BERT WordPiece tokenizer:
`[CLS] text [SEP]`, no task prefix, as docTTTTTquery), and the target query is its word pieces
followed by the model's eos token, whatever special tokens the tokenizer would add on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BatchEncoding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from pipeline.cli import ModelUnavailable
from pipeline.models.backbone import PACKAGED_MINILM, resolve_backbone


@dataclass(frozen=True)
class ScratchT5:
    """Size of a T5 trained from scratch (demo-sized by default; T5-base is 768 / 12+12 / 12 / 3072)."""

    d_model: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 2
    heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1


def _unavailable(spec: str, err: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"cannot load model '{spec}': {err.__class__.__name__}: {str(err).splitlines()[0]}\n"
        f"If this machine is offline, download '{spec}' elsewhere (huggingface-cli download {spec}) and pass that "
        f"directory, or train one from scratch (python -m pipeline.doc2query.train --init scratch).")


def load_seq2seq(spec: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A seq2seq model and its tokenizer from a directory or Hub id (e.g. castorini/doc2query-t5-base-msmarco)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForSeq2SeqLM.from_pretrained(spec)
    except OSError as err:
        raise _unavailable(spec, err) from None
    except ValueError as err:  # e.g. a BERT directory: AutoModelForSeq2SeqLM knows no such config
        raise ModelUnavailable(f"'{spec}' does not hold a sequence-to-sequence model: "
                               f"{str(err).splitlines()[0]}") from None
    return model, tokenizer


def scratch_t5(tokenizer_spec: str = PACKAGED_MINILM,
               size: ScratchT5 | None = None) -> tuple[T5ForConditionalGeneration, PreTrainedTokenizerBase]:
    """A randomly initialised T5 (seed torch first) over the vocabulary of a WordPiece tokenizer.

    With a BERT tokenizer: pad = [PAD], eos = [SEP], and the decoder starts from [PAD] as T5's own
    convention has it (padding positions of the labels are ignored by the loss, so the start token
    never competes with a target). The packaged MiniLM's uncased vocabulary needs no download.
    """
    size = size or ScratchT5()
    if size.d_model % size.heads:
        raise ValueError(f"d_model {size.d_model} is not divisible by {size.heads} heads")
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(tokenizer_spec))
    except OSError as err:
        raise _unavailable(tokenizer_spec, err) from None
    pad = tokenizer.pad_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if pad is None or eos is None:
        raise ValueError(f"tokenizer '{tokenizer_spec}' has no pad or sep/eos token to build a T5 from")
    config = T5Config(vocab_size=len(tokenizer), d_model=size.d_model, d_kv=size.d_model // size.heads,
                      d_ff=size.d_ff, num_layers=size.encoder_layers, num_decoder_layers=size.decoder_layers,
                      num_heads=size.heads, dropout_rate=size.dropout, pad_token_id=pad, eos_token_id=eos,
                      decoder_start_token_id=pad)
    return T5ForConditionalGeneration(config), tokenizer


def encode_sources(tokenizer: PreTrainedTokenizerBase, passages: list[str], max_length: int) -> BatchEncoding:
    """Padded passage ids and mask (only those two: T5 refuses BERT's token_type_ids)."""
    tokens = tokenizer(passages, max_length=max_length, truncation=True, padding="longest", return_tensors="pt")
    return BatchEncoding({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})


def encode_targets(tokenizer: PreTrainedTokenizerBase, queries: list[str], max_length: int,
                   eos_token_id: int) -> torch.Tensor:
    """Label ids `pieces + [eos]` (at most `max_length`), padded with -100, which the loss ignores."""
    pieces = tokenizer(queries, add_special_tokens=False, truncation=True, max_length=max_length - 1)["input_ids"]
    rows = [[*ids, eos_token_id] for ids in pieces]
    labels = torch.full((len(rows), max(map(len, rows))), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        labels[i, :len(row)] = torch.tensor(row)
    return labels
