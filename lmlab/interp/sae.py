"""Sparse autoencoders on the residual stream, trained with the one trainer (``lmlab.train``).

A dictionary of ``n_features`` directions reconstructs an activation x as
x̂ = b_dec + Σ_i f_i(x) · d_i with few features active (Bricken et al. 2023, "Towards
Monosemanticity"; Cunningham et al. 2023). Sparsity comes from an L1 penalty on f weighted by the
decoder norms (``sparsity="l1"``) or from keeping the k largest pre-activations (``"topk"``, Gao et
al. 2024, "Scaling and evaluating sparse autoencoders"). Decoder rows are kept at unit norm after
every optimizer step; features that did not fire during ``resample_every`` steps are resampled
towards inputs the dictionary reconstructs worst (Bricken et al.'s resampling; the trainer's Adam
moments of those rows are not reset, since a layer cannot reach the optimizer).
Activations are scaled by one constant so that their mean squared norm is d_model, which makes
the L1 coefficient comparable across models; reconstructions are returned in the original units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, InputError
from ..core.io import atomic_path, read_json, write_json
from ..core.validate import check_choice, check_number
from ..data.loaders import ShuffledRows
from ..models.hooks import hooked
from ..train.trainer import TrainConfig, train

SPARSITIES = ("l1", "topk")


@dataclass
class SAEConfig:
    """Shape and sparsity of a sparse autoencoder."""

    d_model: int
    n_features: int
    sparsity: str = "topk"
    k: int = 32  # active features per input (top-k)
    l1: float = 5.0  # weight of the L1 penalty (l1)
    resample_every: int = 0  # steps between dead-feature resamplings (0 = never)
    allow_undercomplete: bool = False

    def __post_init__(self) -> None:
        check_number("d_model", self.d_model, low=1, integer=True)
        check_number("n_features", self.n_features, low=1, integer=True)
        check_choice("sparsity", self.sparsity, SPARSITIES)
        if self.n_features < self.d_model and not self.allow_undercomplete:
            raise ConfigError(f"a dictionary of {self.n_features} features is smaller than d_model = {self.d_model}: "
                              "it cannot even span the activations, so its features are not a sparse basis",
                              "use at least d_model features (4–32× is usual), or pass --allow-undercomplete")
        if self.sparsity == "topk":
            check_number("k", self.k, low=1, high=self.n_features, integer=True)
        check_number("l1", self.l1, low=0.0)
        check_number("resample_every", self.resample_every, low=0, integer=True)


class SparseAutoencoder(nn.Module):
    """f = act(W_enc (x·s − b_dec) + b_enc); x̂ = (f W_dec + b_dec) / s, with s the input scale."""

    def __init__(self, config: SAEConfig) -> None:
        super().__init__()
        self.config = config
        d, n = config.d_model, config.n_features
        w = torch.randn(n, d)
        self.W_dec = nn.Parameter(w / w.norm(dim=1, keepdim=True))
        self.W_enc = nn.Parameter(self.W_dec.detach().t().clone())  # tied initialisation (Gao et al.)
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("fired", torch.zeros(n, dtype=torch.bool), persistent=False)
        self.steps, self.resampled, self.last_input = 0, 0, None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [N, n_features] (non-negative, sparse) of activations x [N, d_model]."""
        pre = (x * self.input_scale - self.b_dec) @ self.W_enc + self.b_enc
        if self.config.sparsity == "l1":
            return F.relu(pre)
        values, index = pre.topk(self.config.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, index, F.relu(values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstructions [N, d_model] in the input's units."""
        return (f @ self.W_dec + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        if self.training:
            self.fired |= (f > 0).any(0)
            self.last_input = x.detach()
        return self.decode(f), f

    # --- what the trainer calls (lmlab.train.trainer.TrainingHooks) ---------------------------
    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.steps += 1
        every = self.config.resample_every
        if every and self.steps % every == 0:
            self.resample()

    def training_stats(self) -> dict[str, Any]:
        return {"dead_fraction": float((~self.fired).float().mean()), "resampled": self.resampled}

    @torch.no_grad()
    def resample(self) -> int:
        """Point every feature that has not fired since the last call at an input of the last batch
        drawn with probability ∝ its squared reconstruction error; returns how many were resampled."""
        fired = self.fired.clone()
        self.fired.zero_()
        dead = (~fired).nonzero().flatten()
        if not len(dead) or self.last_input is None:
            return 0
        x = self.last_input
        error = ((self.decode(self.encode(x)) - x) * self.input_scale).pow(2).sum(-1)
        picks = torch.multinomial(error.pow(2) + 1e-12, len(dead), replacement=len(dead) > len(x))
        directions = x[picks] * self.input_scale - self.b_dec
        directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-8)
        norm = self.W_enc[:, fired].norm(dim=0).mean() if fired.any() else 1.0
        self.W_dec[dead] = directions
        self.W_enc[:, dead] = directions.t() * 0.2 * norm
        self.b_enc[dead] = 0.0
        self.resampled += len(dead)
        return len(dead)


@dataclass
class SAELoss:
    """Squared reconstruction error (summed over the width, in scaled units) plus, for L1 sparsity,
    l1 · Σ_i f_i ‖d_i‖: an objective for ``lmlab.train``."""

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        sae = getattr(model, "module", model)
        x = batch["x"]
        recon, f = model(x)
        loss = ((recon - x) * sae.input_scale).pow(2).sum(-1).mean()
        if sae.config.sparsity == "l1" and sae.config.l1:
            loss = loss + sae.config.l1 * (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
        return loss, x.shape[0]


class ActivationBatches:
    """Shuffled batches of activation rows {"x": [batch_size, d_model]}, a pure function of the index."""

    def __init__(self, activations: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        self.activations = activations
        self.rows = ShuffledRows(len(activations), batch_size, seed=seed)

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict:
        return {"x": self.activations[self.rows.indices(index, rank, world)]}


class _Captured(Exception):
    """Raised by the capturing hook: the layers after the hook point need not run."""


@torch.no_grad()
def collect_activations(lm: nn.Module, sequences: Sequence[Sequence[int]], name: str, *,
                        skip_first: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations [N, d_model] float32, where [N, 2] = (sequence, position)) at hook point ``name``
    for every token of ``sequences``; ``skip_first`` leaves out each sequence's first position
    (an attention sink whose outsized norm would dominate the dictionary). The forward pass stops at
    the hook point (the later layers would not change what is kept)."""
    rows, where = [], []
    start = 1 if skip_first else 0

    def capture(x: torch.Tensor) -> None:
        rows.append(x[0, start:].detach().float().cpu())
        raise _Captured

    with hooked(lm, [(name, capture)]):
        for s, ids in enumerate(sequences):
            if len(ids) <= start:
                continue
            try:
                lm(torch.tensor([list(ids)], device=lm.device))
            except _Captured:
                pass
            where += [(s, p) for p in range(start, len(ids))]
    if not rows:
        raise InputError("no activations: every sequence is too short", "give longer texts")
    return torch.cat(rows), torch.tensor(where, dtype=torch.long)


def train_sae(activations: torch.Tensor, config: SAEConfig, run_dir: str | Path, *, steps: int = 1000,
              batch_size: int = 256, lr: float = 4e-4, seed: int = 0) -> tuple[SparseAutoencoder, dict]:
    """A sparse autoencoder fitted to ``activations`` [N, d_model] by ``lmlab.train`` (Adam, no weight
    decay, no clipping; metrics and checkpoints in ``run_dir``); returns it and its ``sae_metrics``."""
    if activations.dim() != 2 or activations.shape[1] != config.d_model:
        raise InputError(f"activations of shape {tuple(activations.shape)} do not match d_model = {config.d_model}",
                         "collect them at the layer the SAE is for")
    torch.manual_seed(seed)
    sae = SparseAutoencoder(config)
    sae.input_scale.fill_(math.sqrt(config.d_model) / float(activations.norm(dim=1).pow(2).mean().sqrt()))
    with torch.no_grad():  # the decoder bias starts at the data's mean (Bricken et al. take the geometric median):
        sae.b_dec.copy_(activations.mean(0) * sae.input_scale)  # residual streams have large constant directions
    settings = TrainConfig(steps=steps, lr=lr, schedule="constant", weight_decay=0.0, beta2=0.999, clip=None,
                           seed=seed, device="cpu", log_every=max(1, steps // 50))
    train(sae, SAELoss(), ActivationBatches(activations, batch_size, seed), settings, run_dir)
    sae.eval()
    return sae, sae_metrics(sae, activations)


@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, activations: torch.Tensor) -> dict[str, float]:
    """Fraction of variance explained 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², mean L0 (active features per
    input), and the fraction of features that never fire on ``activations``."""
    recon, f = sae(activations)
    residual = (activations - recon).pow(2).sum()
    total = (activations - activations.mean(0)).pow(2).sum()
    return {"fve": float(1 - residual / total), "l0": float((f > 0).sum(-1).float().mean()),
            "dead_fraction": float(((f > 0).sum(0) == 0).float().mean()),
            "mse": float((activations - recon).pow(2).mean())}


@torch.no_grad()
def top_examples(sae: SparseAutoencoder, activations: torch.Tensor, where: torch.Tensor,
                 sequences: Sequence[Sequence[int]], feature: int, *, k: int = 5, window: int = 8
                 ) -> list[dict[str, Any]]:
    """The ``k`` tokens where ``feature`` fires hardest: {"activation", "sequence", "position",
    "context" (ids of up to ``window`` tokens before, the token last)}."""
    check_number("feature", feature, low=0, high=sae.config.n_features - 1, integer=True)
    values = sae.encode(activations)[:, feature]
    best = values.topk(min(k, len(values)))
    out = []
    for value, row in zip(best.values.tolist(), best.indices.tolist(), strict=True):
        if value <= 0:
            break
        s, p = where[row].tolist()
        out.append({"activation": value, "sequence": s, "position": p,
                    "context": list(sequences[s][max(0, p - window):p + 1])})
    return out


def save_sae(sae: SparseAutoencoder, directory: str | Path, info: dict | None = None) -> Path:
    """``sae.json`` (its config and ``info``) and ``sae.safetensors`` in ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / "sae.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in sae.state_dict().items()}, str(tmp))
    write_json(directory / "sae.json", {"config": asdict(sae.config), **(info or {})})
    return directory


def load_sae(directory: str | Path) -> SparseAutoencoder:
    """The sparse autoencoder ``save_sae`` wrote."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_json(directory / "sae.json", "SAE description")
    sae = SparseAutoencoder(SAEConfig(**meta["config"]))
    sae.load_state_dict(load_file(str(directory / "sae.safetensors")))
    return sae.eval()
