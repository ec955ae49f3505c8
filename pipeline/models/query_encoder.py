"""EmbedDistill's asymmetric student (Kim et al. 2023): a small query encoder that searches a larger dense
model's index.

The student pools its BERT's query tokens as the bi-encoder does (PoolAvg, the same query conventions) and,
where its width differs from the dense model's, maps the pooled vector with a learned linear layer into that
model's space. Passages are never encoded by it: its queries are scored against the dense model's passage
vectors, so that model's shards and index serve it unchanged. It records which model that is, and the
fingerprint of its weights, which its query shards carry so that search accepts them for that index.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.models.backbone import load_conventions, save_conventions
from pipeline.models.biencoder import BiEncoder

KIND = "query_encoder"
PROJECTION_FILE = "query_projection.safetensors"


class QueryEncoder(nn.Module):
    def __init__(self, encoder: BiEncoder, projection: nn.Linear | None, passages_from: str,
                 passages_fingerprint: str):
        super().__init__()
        self.encoder, self.projection = encoder, projection
        self.passages_from, self.passages_fingerprint = passages_from, passages_fingerprint

    @property
    def dims(self) -> int:
        return self.projection.out_features if self.projection is not None else self.encoder.bert.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder(input_ids, attention_mask)
        return pooled if self.projection is None else self.projection(pooled)

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        pooled = self.encoder.encode_queries(queries)
        return pooled if self.projection is None else self.projection(pooled)

    def save(self, directory: Path) -> None:
        """The student's BERT directory, the map beside it, and the dense model whose passages it is scored with."""
        directory = Path(directory)
        self.encoder.save(directory)
        if self.projection is not None:
            save_file({"weight": self.projection.weight.detach().contiguous()}, directory / PROJECTION_FILE)
        save_conventions(directory, KIND, self.encoder.conv, passages_from=self.passages_from,
                         passages_fingerprint=self.passages_fingerprint, dims=self.dims)

    @classmethod
    def load(cls, directory: Path) -> QueryEncoder:
        conv, payload = load_conventions(directory, KIND)
        encoder = BiEncoder.from_backbone(str(directory), conv)
        projection = None
        if (Path(directory) / PROJECTION_FILE).is_file():
            weight = load_file(Path(directory) / PROJECTION_FILE)["weight"]
            projection = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            projection.weight.data.copy_(weight)
        return cls(encoder, projection, payload["passages_from"], payload["passages_fingerprint"])


def is_query_encoder(spec: str) -> bool:
    """Whether `spec` is a directory holding a QueryEncoder (else a bi-encoder, ours or published)."""
    try:
        load_conventions(Path(spec), KIND)
    except ValueError:
        return False
    return True
