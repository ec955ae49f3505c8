"""What a student learns from besides its labels: the frozen teachers' outputs for one batch.

The ColBERT teacher's token vectors (`TeacherTokens`) give Eq. 6's scores and embedding matching's targets; the
dual-pooling cross-encoder's pooled segments (`PairTargets`) give Margin-MSE's pair scores and the targets of
embedding matching from a cross-encoder (EmbedDistill, Kim et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from transformers import BatchEncoding

from pipeline.models.backbone import masked_mean
from pipeline.models.colbert import ColBERT, maxsim, pad_tokens
from pipeline.models.cross_encoder import CrossEncoder
from pipeline.train.batches import join_passages
from pipeline.train.context import Context
from pipeline.train.losses import dot_scores, embedding_matching, student_loss


def gather_passages(local: torch.Tensor, ctx: Context, differentiable: bool) -> torch.Tensor:
    """All ranks' passages as [all positives, all negatives] (each rank holds [its pos, its neg])."""
    return join_passages(dist_fn.all_gather(local) if differentiable else _all_gather_no_grad(local, ctx))


def _all_gather_no_grad(local: torch.Tensor, ctx: Context) -> list[torch.Tensor]:
    parts = [torch.empty_like(local) for _ in range(ctx.world)]
    dist.all_gather(parts, local.contiguous())
    return parts


@dataclass(frozen=True)
class TeacherTokens:
    """The frozen teacher's token vectors of a batch as MaxSim reads them (projected; normalised, queries
    unless the teacher leaves them raw), with the masks of the tokens that take part: every query
    position, and the documents' tokens without padding and punctuation."""

    queries: torch.Tensor
    query_mask: torch.Tensor
    docs: torch.Tensor
    doc_mask: torch.Tensor

    @classmethod
    def of(cls, teacher: ColBERT, query_tokens: BatchEncoding, passage_tokens: BatchEncoding) -> TeacherTokens:
        queries = teacher.query_embeddings(query_tokens["input_ids"], query_tokens["attention_mask"])
        docs, doc_mask = teacher.doc_embeddings(passage_tokens["input_ids"], passage_tokens["attention_mask"])
        return cls(queries, query_tokens["attention_mask"].bool(), docs, doc_mask)

    @classmethod
    def join(cls, parts: Sequence[TeacherTokens]) -> TeacherTokens:
        """Micro-batches' token vectors as one batch's: padded to one length, passages in batch order."""
        return cls(torch.cat(pad_tokens([part.queries for part in parts])),
                   torch.cat(pad_tokens([part.query_mask for part in parts])),
                   join_passages(pad_tokens([part.docs for part in parts])),
                   join_passages(pad_tokens([part.doc_mask for part in parts])))

    def gathered(self, ctx: Context) -> TeacherTokens:
        """With every rank's passages (the frozen teacher needs no gradient through the gather)."""
        return replace(self, docs=gather_passages(self.docs, ctx, differentiable=False),
                       doc_mask=gather_passages(self.doc_mask, ctx, differentiable=False))

    def scores(self) -> torch.Tensor:
        return maxsim(self.queries, self.query_mask, self.docs, self.doc_mask)

    def matching_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding matching's targets in the teacher's scoring space: the mean of exactly the token
        vectors MaxSim reads, at unit length (see `embedding_matching_loss`), for queries and passages."""
        return (F.normalize(masked_mean(self.queries.float(), self.query_mask, 0), dim=-1),
                F.normalize(masked_mean(self.docs.float(), self.doc_mask, 0), dim=-1))


def eq6_loss(query_vectors: torch.Tensor, passage_vectors: torch.Tensor,
             teacher: TeacherTokens | torch.Tensor | None, condition: str = "inbatch", gamma: float = 0.1,
             teacher_tau: float = 0.25, student_tau: float = 1.0, offset: int = 0,
             labelled: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6 (`student_loss`) from the student's vectors and the teacher's token vectors (scored by MaxSim)
    or score pairs from a file; both score matrices in float32 whatever the encoders' autocast."""
    teacher_scores = teacher.scores() if isinstance(teacher, TeacherTokens) else teacher
    return student_loss(dot_scores(query_vectors, passage_vectors), teacher_scores, condition, gamma, teacher_tau,
                        student_tau, offset, labelled)


def embedding_matching_loss(mapped_queries: torch.Tensor, mapped_passages: torch.Tensor,
                            teacher: TeacherTokens) -> torch.Tensor:
    """EmbedDistill's embedding matching (Kim et al. 2023): squared distance between the student's vectors,
    mapped by the learned linear map into the teacher's space, and the teacher's, queries and passages
    weighed equally.

    Both sides at unit length (a distance of 2 - 2 cos): MaxSim compares unit token vectors by direction
    only, while the length of their mean just says how much the tokens disagree, which no teacher score
    uses; on the sphere the term also keeps a fixed scale (0 to 4) beside the KL whatever the student's
    width or the map's scale, and the map cannot lower it by shrinking its outputs toward the short targets.
    """
    query_target, passage_target = teacher.matching_targets()
    return (embedding_matching(F.normalize(mapped_queries.float(), dim=-1), query_target)
            + embedding_matching(F.normalize(mapped_passages.float(), dim=-1), passage_target)) / 2


@dataclass(frozen=True)
class PairTargets:
    """The dual-pooling cross-encoder's outputs for each query's own pair: (B, 2) scores [positive, negative],
    the query's vector (the mean of its two pairs' query segments: the cross-encoder reads the query anew beside
    each passage) and the passages' vectors, [positives, negatives] as the student's."""

    pairs: torch.Tensor
    queries: torch.Tensor
    passages: torch.Tensor

    @classmethod
    def of(cls, cross_encoder: CrossEncoder, queries: list[str], positives: list[str],
           negatives: list[str]) -> PairTargets:
        query_vectors, passage_vectors = cross_encoder.embed(queries * 2, positives + negatives)
        scores = (query_vectors.float() * passage_vectors.float()).sum(-1)
        return cls(torch.stack(scores.split(len(queries)), dim=1),
                   torch.stack(query_vectors.float().split(len(queries))).mean(0), passage_vectors.float())

    @classmethod
    def join(cls, parts: Sequence[PairTargets]) -> PairTargets:
        return cls(torch.cat([part.pairs for part in parts]), torch.cat([part.queries for part in parts]),
                   join_passages([part.passages for part in parts]))

    def matching_loss(self, mapped_queries: torch.Tensor, mapped_passages: torch.Tensor) -> torch.Tensor:
        """Squared distance to the cross-encoder's vectors as they are, queries and passages weighed equally:
        its score is their inner product, so their lengths are part of what the student should learn."""
        return (embedding_matching(mapped_queries, self.queries)
                + embedding_matching(mapped_passages, self.passages)) / 2
