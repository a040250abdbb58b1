"""Reformer's LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer", §2).

Queries and keys are shared (each key is its query, normalised). Each round hashes every key by
a random rotation R: bucket = argmax([xR; -xR]) (angular LSH), sorts positions by (bucket,
position), cuts the sorted sequence into chunks and lets each chunk attend to itself and the
chunk before, within its bucket and causally. A token attends to itself only when nothing else
is allowed (its score is -1e5, as in the reference implementation). Rounds are combined with
weights from their softmax normalisers (logsumexp). A key that shares the query's bucket in
several rounds would be counted once per round; the paper's duplicate correction subtracts
log(n_ij), n_ij the number of rounds in which query i and key j share a bucket, from their score
in every round, so the combination is one attention over the union of the rounds' buckets with
each key counted once (exactly so where every shared bucket also shares a chunk). Memory is
[T, 2·chunk] per round instead of [T, T].

With a cache (decoding) a query attends to every earlier cached key that shares one of its
buckets — the set chunking approximates — through a mask over the cached keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SELF_SCORE = -1e5  # a token's score for itself: used only when it may attend to nothing else


def hash_buckets(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Bucket [R, B, H, T] of each vector x [B, H, T, D] under each round's rotations [R, H, D, n/2]."""
    rotated = torch.einsum("bhtd,rhdn->rbhtn", x.float(), rotations.float())
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def lsh_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotations: torch.Tensor, chunk: int,
                  scale: float, *, dedupe: bool = True) -> torch.Tensor:
    """Causal LSH attention [B, H, T, D] over a whole sequence (keys [B, H, T, D] normalised queries);
    ``dedupe`` applies the duplicate correction across rounds (off: each round's keys weigh in anew)."""
    b, h, t, d = q.shape
    work = torch.promote_types(q.dtype, torch.float32)  # scores and the round mix: float32 at least
    buckets = hash_buckets(k, rotations)  # [R, B, H, T]
    dedupe = dedupe and len(buckets) > 1
    positions = torch.arange(t, device=q.device)
    n = math.ceil(t / chunk)
    pad = n * chunk - t
    outs, norms = [], []
    for bucket in buckets:
        order = (bucket * t + positions).argsort(dim=-1)  # by bucket, then position
        pos = F.pad(order, (0, pad), value=-1)  # -1 marks padding
        bkt = F.pad(bucket.gather(-1, order), (0, pad), value=-1)
        index = order.unsqueeze(-1).expand(b, h, t, d)
        qs, ks, vs = (F.pad(x.gather(2, index), (0, 0, 0, pad)).view(b, h, n, chunk, d) for x in (q, k, v))
        pos, bkt = pos.view(b, h, n, chunk), bkt.view(b, h, n, chunk)

        def with_previous(x: torch.Tensor) -> torch.Tensor:  # each chunk's keys: the chunk before, then itself
            before = torch.cat([torch.full_like(x[:, :, :1], -1) if x.dtype == torch.long
                                else torch.zeros_like(x[:, :, :1]), x[:, :, :-1]], dim=2)
            return torch.cat([before, x], dim=3)

        kpos, kbkt = with_previous(pos), with_previous(bkt)
        scores = (qs @ with_previous(ks).transpose(-1, -2)).to(work) * scale  # [B, H, n, c, 2c]
        qp, kp = pos.unsqueeze(-1), kpos.unsqueeze(-2)
        allowed = (kp >= 0) & (kp <= qp) & (bkt.unsqueeze(-1) == kbkt.unsqueeze(-2))
        scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(kp == qp, SELF_SCORE)
        if dedupe:  # − log(rounds in which the pair shares a bucket): a key counts once over the rounds
            scores = scores - shared_rounds(buckets, pos, kpos).log()
        norm = torch.logsumexp(scores, dim=-1)  # [B, H, n, c]
        out = torch.softmax(scores, dim=-1).to(v.dtype) @ with_previous(vs)
        back = order.argsort(dim=-1)  # undo the sort
        out = out.flatten(2, 3)[:, :, :t].gather(2, back.unsqueeze(-1).expand(b, h, t, d))
        outs.append(out)
        norms.append(norm.flatten(2, 3)[:, :, :t].gather(2, back))
    if len(outs) == 1:
        return outs[0]
    weights = torch.softmax(torch.stack(norms), dim=0).unsqueeze(-1)  # [R, B, H, T, 1]
    return (torch.stack(outs).to(work) * weights).sum(dim=0).to(v.dtype)


def shared_rounds(buckets: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """n_ij [B, H, n, c, 2c]: in how many rounds query i and key j share a bucket, for the queries and
    keys of one round's chunks (positions [B, H, n, c] and [B, H, n, 2c], −1 for padding, which gets 1)."""
    every = buckets.unsqueeze(-1)  # [R, B, H, T, 1]: each position's bucket in every round
    r, b, h, t, _ = every.shape

    def look_up(pos: torch.Tensor) -> torch.Tensor:
        index = pos.clamp(min=0).reshape(1, b, h, -1, 1).expand(r, -1, -1, -1, 1)
        return every.gather(3, index).view(r, *pos.shape)

    count = (look_up(q_pos).unsqueeze(-1) == look_up(k_pos).unsqueeze(-2)).sum(dim=0)
    return count.clamp(min=1)


def lsh_mask(q: torch.Tensor, k: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """[B, H, T, S] True where a query shares a bucket with a key in some round (the decoding mask)."""
    same = hash_buckets(q, rotations).unsqueeze(-1) == hash_buckets(k, rotations).unsqueeze(-2)
    return same.any(dim=0)


class LSHAttention(nn.Module):
    """The fixed random rotations of one layer (a buffer, saved with the weights so hashing is
    reproducible) and the chunk length."""

    def __init__(self, n_heads: int, head_dim: int, buckets: int, rounds: int, chunk: int) -> None:
        super().__init__()
        self.chunk = chunk
        self.register_buffer("rotations", torch.randn(rounds, n_heads, head_dim, buckets // 2))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return lsh_attention(q, k, v, self.rotations, self.chunk, scale)
