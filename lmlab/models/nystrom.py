"""Nyström attention (Xiong et al. 2021, "Nyströmformer: A Nyström-Based Algorithm for
Approximating Self-Attention").

With m landmarks — the means of m consecutive segments of the queries (Q̃) and of the keys (K̃) —
softmax(QKᵀ) ≈ softmax(QK̃ᵀ) · softmax(Q̃K̃ᵀ)⁺ · softmax(Q̃Kᵀ), costing [T, m] + [m, m] + [m, T]
instead of [T, T]. The pseudo-inverse ⁺ is the paper's iterative one (Razavi et al. 2014,
6 iterations by default). With m = T the landmarks are the tokens and the product is exact
(A A⁺ A = A). Every output mixes all positions, so it is for encoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segment_means(x: torch.Tensor, m: int) -> torch.Tensor:
    """Means of ``m`` consecutive, near-equal segments of x [B, H, T, D] along T → [B, H, m, D]."""
    b, h, t, d = x.shape
    return F.adaptive_avg_pool1d(x.reshape(b * h, t, d).transpose(1, 2), m).transpose(1, 2).reshape(b, h, m, d)


def iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse of [.., m, m] by the paper's iteration
    Z ← ¼ Z (13 I − AZ (15 I − AZ (7 I − AZ))), from Z₀ = Aᵀ / (‖A‖₁ ‖A‖∞)."""
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    z = a.transpose(-1, -2) / (a.abs().sum(-2).amax(-1, keepdim=True).unsqueeze(-1)
                               * a.abs().sum(-1).amax(-1, keepdim=True).unsqueeze(-1))
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, landmarks: int, scale: float,
                      iterations: int = 6) -> torch.Tensor:
    """Nyström approximation [B, H, T, D] of softmax attention with ``landmarks`` landmarks (at most T)."""
    m = min(landmarks, q.shape[2])
    q_land, k_land = segment_means(q.float(), m), segment_means(k.float(), m)
    kernel_q = torch.softmax(q.float() @ k_land.transpose(-1, -2) * scale, dim=-1)  # [B, H, T, m]
    kernel_mid = torch.softmax(q_land @ k_land.transpose(-1, -2) * scale, dim=-1)  # [B, H, m, m]
    kernel_k = torch.softmax(q_land @ k.float().transpose(-1, -2) * scale, dim=-1)  # [B, H, m, T]
    out = kernel_q @ (iterative_pinv(kernel_mid, iterations) @ (kernel_k @ v.float()))
    return out.to(v.dtype)
