"""Mixture of experts: a drop-in replacement for a transformer's MLP, [B, T, D] -> [B, T, D].

A float32 router scores the experts for every token; a routing function turns the scores into
combine weights (token-choice top-k, Switch top-1 with capacity, expert choice, hashing, noisy
top-k); the chosen experts' outputs are summed with those weights, plus any shared experts.
Balancing: the Switch load-balancing loss and router z-loss (``MoE.aux_loss`` after each
forward) or DeepSeek-V3's loss-free bias, moved outside the gradient by ``update_balance_bias``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, InputError
from ..core.validate import check_choice, check_number

ROUTINGS = ("topk", "switch", "expert_choice", "hash", "noisy_topk")
SCORES = ("softmax", "sigmoid")


class SwiGLU(nn.Module):
    """LLaMA/Mixtral expert: ``down(silu(gate(x)) * up(x))``, no biases."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_hidden, bias=False)
        self.up = nn.Linear(d_model, d_hidden, bias=False)
        self.down = nn.Linear(d_hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class GeluMLP(nn.Module):
    """GPT-2/Switch expert: ``proj(gelu(fc(x)))`` with biases."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_hidden)
        self.proj = nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


# ---------------------------------------------------------------- routing functions


@dataclass
class Routing:
    """What a router decided for N tokens and E experts.

    ``weights`` [N, E] float32 combine weights (0 where a token is not sent); ``dispatch`` [N, E]
    which (token, expert) pairs are computed; ``chosen`` [N, E] what the tokens asked for before
    any capacity limit (the load the balancing methods see); ``probs`` [N, E] the router's
    distribution over experts (None for hashing, which has no router).
    """

    weights: torch.Tensor
    dispatch: torch.Tensor
    chosen: torch.Tensor
    probs: torch.Tensor | None


def expert_capacity(n_tokens: int, n_experts: int, capacity_factor: float, top_k: int = 1) -> int:
    """Tokens one expert may take: ``ceil(capacity_factor * top_k * n_tokens / n_experts)``."""
    return max(1, math.ceil(capacity_factor * top_k * n_tokens / n_experts))


def _scores(logits: torch.Tensor, score: str) -> torch.Tensor:
    return torch.softmax(logits, dim=-1) if score == "softmax" else torch.sigmoid(logits)


def topk_routing(logits: torch.Tensor, k: int, *, score: str = "softmax", renormalize: bool = True,
                 bias: torch.Tensor | None = None) -> Routing:
    """Token choice: each token goes to its ``k`` best experts, weighted by their scores.

    ``renormalize`` divides the k weights by their sum (Mixtral, DeepSeek-V3); ``bias`` is added
    to the scores for choosing only, never to the weights (DeepSeek-V3's loss-free balancing).
    """
    scores = _scores(logits.float(), score)
    choice = scores if bias is None else scores + bias
    top = choice.topk(k, dim=-1).indices
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
    weights = torch.where(chosen, scores, 0.0)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    probs = scores / scores.sum(-1, keepdim=True)
    return Routing(weights, chosen, chosen, probs)


def switch_routing(logits: torch.Tensor, capacity: int, *, bias: torch.Tensor | None = None) -> Routing:
    """Switch Transformer: top-1 expert weighted by its probability, at most ``capacity`` tokens
    per expert; later tokens (in flattened order) over the limit are dropped (weight 0)."""
    probs = torch.softmax(logits.float(), dim=-1)
    choice = probs if bias is None else probs + bias
    chosen = F.one_hot(choice.argmax(-1), probs.shape[-1]).bool()
    position = torch.cumsum(chosen.long(), dim=0)      # 1-based arrival order at each expert
    dispatch = chosen & (position <= capacity)
    return Routing(torch.where(dispatch, probs, 0.0), dispatch, chosen, probs)


def expert_choice_routing(logits: torch.Tensor, capacity: int) -> Routing:
    """Expert choice (Zhou et al. 2022): each expert takes the ``capacity`` tokens that score it
    highest; a token may get several experts or none. It looks across the whole batch, so it is
    not causal: use it for encoders or training, not token-by-token decoding."""
    probs = torch.softmax(logits.float(), dim=-1)
    capacity = min(capacity, probs.shape[0])
    top = probs.topk(capacity, dim=0).indices          # [capacity, E]
    dispatch = torch.zeros_like(probs, dtype=torch.bool).scatter_(0, top, True)
    return Routing(torch.where(dispatch, probs, 0.0), dispatch, dispatch, probs)


def hash_expert(token_ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """A fixed pseudo-random expert per token id (Knuth's multiplicative hash, bits mixed)."""
    h = (token_ids.long() * 2654435761) % 2**32
    return (h ^ (h >> 16)) % n_experts


def hash_routing(token_ids: torch.Tensor, n_experts: int) -> Routing:
    """Hash layers (Roller et al. 2021): the token id alone picks the expert, weight 1."""
    dispatch = F.one_hot(hash_expert(token_ids.reshape(-1), n_experts), n_experts).bool()
    return Routing(dispatch.float(), dispatch, dispatch, None)


# ---------------------------------------------------------------- auxiliary losses


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Switch's balance loss ``E * sum_e f_e * P_e``: f the share of routing choices per expert,
    P the mean router probability. It is 1 for perfectly uniform routing, E when collapsed."""
    n_experts = probs.shape[-1]
    choices = chosen.float()
    share = choices.sum(0) / choices.sum().clamp(min=1)
    return n_experts * (share * probs.mean(0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss: mean squared log-partition of the router logits (keeps them small)."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


# ---------------------------------------------------------------- the layer


class MoE(nn.Module):
    """A mixture-of-experts MLP: ``forward(x[, token_ids, token_mask])`` maps [..., D] to [..., D].

    ``routing`` is one of ROUTINGS; ``top_k`` experts per token (top-k, noisy top-k; the mean
    experts per token for expert choice); ``capacity_factor`` sizes Switch and expert-choice
    buffers; ``n_shared_experts`` always-on experts (DeepSeek); ``expert_factory(d_model,
    d_hidden)`` builds each expert (default SwiGLU). After a forward, ``aux_loss`` holds
    ``balance_loss_weight * balance + z_loss_weight * z`` for the trainer to add to its loss.
    ``bias_update_rate`` > 0 turns on DeepSeek-V3's bias balancing (call ``update_balance_bias``
    after each optimizer step).
    """

    def __init__(self, d_model: int, d_hidden: int, n_experts: int, *, top_k: int = 2,
                 routing: str = "topk", capacity_factor: float = 1.25, n_shared_experts: int = 0,
                 expert_factory: Callable[[int, int], nn.Module] | None = None,
                 score: str = "softmax", renormalize: bool = True,
                 balance_loss_weight: float = 0.01, z_loss_weight: float = 0.0,
                 bias_update_rate: float = 0.0) -> None:
        super().__init__()
        check_number("d_model", d_model, low=1, integer=True)
        check_number("n_experts", n_experts, low=1, integer=True)
        check_number("top_k", top_k, low=1, high=n_experts, integer=True)
        check_number("n_shared_experts", n_shared_experts, low=0, integer=True)
        check_number("capacity_factor", capacity_factor, low=0.0, low_inclusive=False)
        check_number("balance_loss_weight", balance_loss_weight, low=0.0)
        check_number("z_loss_weight", z_loss_weight, low=0.0)
        check_number("bias_update_rate", bias_update_rate, low=0.0)
        self.routing = check_choice("routing", routing, ROUTINGS)
        self.score = check_choice("score", score, SCORES)
        if routing == "switch" and top_k != 1:
            raise ConfigError("switch routing sends each token to one expert, but top_k != 1",
                              "use top_k=1 with routing='switch', or routing='topk'")
        if score == "sigmoid" and routing not in ("topk", "noisy_topk"):
            raise ConfigError(f"score='sigmoid' applies to top-k routing, not {routing!r}",
                              "use score='softmax'")
        if bias_update_rate > 0 and routing in ("expert_choice", "hash"):
            raise ConfigError(f"bias balancing needs token-choice routing, not {routing!r}",
                              "use routing='topk', 'noisy_topk' or 'switch'")
        factory = SwiGLU if expert_factory is None else expert_factory
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.capacity_factor, self.renormalize = capacity_factor, renormalize
        self.balance_loss_weight, self.z_loss_weight = balance_loss_weight, z_loss_weight
        self.bias_update_rate = bias_update_rate
        self.experts = nn.ModuleList(factory(d_model, d_hidden) for _ in range(n_experts))
        self.shared_experts = nn.ModuleList(factory(d_model, d_hidden) for _ in range(n_shared_experts))
        if routing != "hash":
            self.router = nn.Linear(d_model, n_experts, bias=False)
            nn.init.normal_(self.router.weight, std=0.02)
        if routing == "noisy_topk":
            self.noise = nn.Linear(d_model, n_experts, bias=False)
            nn.init.zeros_(self.noise.weight)      # Shazeer et al.: start with no noise
        self.register_buffer("balance_bias", torch.zeros(n_experts))
        self.register_buffer("pending_load", torch.zeros(n_experts), persistent=False)
        self.register_buffer("load_counts", torch.zeros(n_experts), persistent=False)
        self.register_buffer("dropped_count", torch.zeros(()), persistent=False)
        self.register_buffer("token_count", torch.zeros(()), persistent=False)
        self.aux_loss = torch.zeros(())
        self.last_losses: dict[str, torch.Tensor] = {}

    def router_logits(self, flat: torch.Tensor) -> torch.Tensor:
        """Router logits in float32 whatever the input dtype or autocast (Switch's selective
        precision: the softmax's exponentials are unstable in bf16)."""
        with torch.autocast(device_type=flat.device.type, enabled=False):
            return F.linear(flat.float(), self.router.weight.float())

    def route(self, flat: torch.Tensor, token_ids: torch.Tensor | None) -> tuple[Routing, torch.Tensor | None]:
        """The routing of the N flattened tokens, and the router logits (None for hashing)."""
        if self.routing == "hash":
            if token_ids is None:
                raise InputError("hash routing needs the token ids", "call moe(x, token_ids=ids)")
            if token_ids.numel() != flat.shape[0]:
                raise InputError(f"token_ids has {token_ids.numel()} ids for {flat.shape[0]} tokens",
                                 "pass the ids of the same batch, shape [B, T]")
            return hash_routing(token_ids, self.n_experts), None
        logits = self.router_logits(flat)
        bias = self.balance_bias if self.bias_update_rate > 0 else None
        n = flat.shape[0]
        if self.routing == "switch":
            capacity = expert_capacity(n, self.n_experts, self.capacity_factor)
            return switch_routing(logits, capacity, bias=bias), logits
        if self.routing == "expert_choice":
            capacity = expert_capacity(n, self.n_experts, self.capacity_factor, self.top_k)
            return expert_choice_routing(logits, capacity), logits
        choice_logits = logits
        if self.routing == "noisy_topk" and self.training:
            with torch.autocast(device_type=flat.device.type, enabled=False):
                noise_scale = F.softplus(F.linear(flat.float(), self.noise.weight.float()))
            choice_logits = logits + torch.randn_like(logits) * noise_scale
        return topk_routing(choice_logits, self.top_k, score=self.score, renormalize=self.renormalize,
                            bias=bias), logits

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None,
                token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mix the experts for every token of ``x``; ``token_ids`` feed hash routing;
        ``token_mask`` (True for real tokens) leaves padding out of routing, losses and load
        statistics, and gives it a zero output."""
        if x.shape[-1] != self.d_model:
            raise InputError(f"MoE expects a last dimension of {self.d_model}, got {tuple(x.shape)}",
                             "pass hidden states of width d_model")
        flat = x.reshape(-1, self.d_model)
        if token_ids is not None:
            token_ids = token_ids.reshape(-1)
        if token_mask is None:
            return self._mix(flat, token_ids).reshape(x.shape)
        keep = token_mask.reshape(-1).bool()
        if keep.numel() != flat.shape[0]:
            raise InputError(f"token_mask has {keep.numel()} flags for {flat.shape[0]} tokens",
                             "pass a mask of the batch's shape [B, T]")
        rows = keep.nonzero().squeeze(1)
        mixed = self._mix(flat[rows], None if token_ids is None else token_ids[rows])
        return torch.zeros_like(flat).index_copy(0, rows, mixed).reshape(x.shape)

    def _mix(self, flat: torch.Tensor, token_ids: torch.Tensor | None) -> torch.Tensor:
        """Route the N x D tokens and sum the chosen experts' outputs plus the shared experts'."""
        if flat.shape[0] == 0:                     # an all-padding batch: nothing to route
            self.aux_loss = torch.zeros((), device=flat.device)
            return flat.clone()
        routing, logits = self.route(flat, token_ids)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows = routing.dispatch[:, e].nonzero().squeeze(1)
            if rows.numel():
                weight = routing.weights[rows, e].unsqueeze(1).to(flat.dtype)
                out.index_add_(0, rows, expert(flat[rows]) * weight)
        for expert in self.shared_experts:
            out = out + expert(flat)
        self._account(routing, logits)
        return out

    def _account(self, routing: Routing, logits: torch.Tensor | None) -> None:
        """Set ``aux_loss`` and update the load statistics from one routing decision."""
        zero = torch.zeros((), device=routing.weights.device)
        balance = zero
        if routing.probs is not None and self.routing != "expert_choice":
            balance = load_balancing_loss(routing.probs, routing.chosen)
        z = router_z_loss(logits) if logits is not None else zero
        self.aux_loss = self.balance_loss_weight * balance + self.z_loss_weight * z
        with torch.no_grad():
            self.last_losses = {"balance_loss": balance.detach(), "z_loss": z.detach()}
            self.load_counts += routing.dispatch.sum(0).to(self.load_counts)
            self.token_count += routing.dispatch.shape[0]
            self.dropped_count += (~routing.dispatch.any(1)).sum().to(self.dropped_count)
            if self.training:
                self.pending_load += routing.chosen.sum(0).to(self.pending_load)

    @torch.no_grad()
    def update_balance_bias(self) -> None:
        """DeepSeek-V3's step rule: ``b_e += rate * sign(mean load - load_e)`` over the tokens
        routed since the last call; overloaded experts become less attractive, underloaded
        ones more. Never touched by the gradient."""
        if self.bias_update_rate > 0 and self.pending_load.sum() > 0:
            self.balance_bias += self.bias_update_rate * torch.sign(self.pending_load.mean() - self.pending_load)
        self.pending_load.zero_()

    # --- the trainer's hooks (``lmlab.train.trainer.TrainingHooks``) -----------------------------
    def auxiliary_loss(self) -> torch.Tensor:
        """The balancing and router z losses of the last forward, added to the objective's loss."""
        return self.aux_loss

    def after_optimizer_step(self) -> None:
        self.update_balance_bias()

    def training_stats(self) -> dict:
        """Logged by the trainer as ``expert_load`` (per layer), then reset."""
        return {"expert_load": self.load_stats(reset=True)}

    def load_stats(self, reset: bool = True) -> dict:
        """Per-expert load since the last reset, for the trainer to log: each expert's share of
        the computed (token, expert) pairs, max and min share over uniform, dropped tokens."""
        total = float(self.load_counts.sum())
        share = (self.load_counts / total).tolist() if total else [0.0] * self.n_experts
        stats = {
            "load": share,
            "max_over_uniform": max(share) * self.n_experts,
            "min_over_uniform": min(share) * self.n_experts,
            "dropped_fraction": float(self.dropped_count / self.token_count) if self.token_count else 0.0,
            **{name: float(value) for name, value in self.last_losses.items()},
        }
        if reset:
            self.load_counts.zero_()
            self.dropped_count.zero_()
            self.token_count.zero_()
        return stats

    def extra_repr(self) -> str:
        return (f"routing={self.routing}, n_experts={self.n_experts}, top_k={self.top_k}, "
                f"shared={len(self.shared_experts)}")


# ---------------------------------------------------------------- helpers for a whole model


def moe_layers(model: nn.Module) -> dict[str, MoE]:
    """The MoE layers of a model by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, MoE)}


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the MoE layers' auxiliary losses from the last forward (0 when there are none)."""
    losses = [layer.aux_loss for layer in moe_layers(model).values()]
    return torch.stack(losses).sum() if losses else torch.zeros(())


def update_balance_biases(model: nn.Module) -> None:
    """Apply every MoE layer's bias step (call after each optimizer step)."""
    for layer in moe_layers(model).values():
        layer.update_balance_bias()


def moe_load_stats(model: nn.Module, reset: bool = True) -> dict[str, dict]:
    """``load_stats`` of every MoE layer, by module name."""
    return {name: layer.load_stats(reset) for name, layer in moe_layers(model).items()}


def upcycle(mlp: nn.Module, n_experts: int, *, d_model: int, **moe_options) -> MoE:
    """Sparse upcycling (Komatsuzaki et al. 2022): an MoE whose experts start as copies of a
    trained dense MLP. With renormalised top-k routing it computes exactly the dense MLP at
    initialisation; the router is new."""
    if moe_options.get("n_shared_experts", 0):
        raise ConfigError("upcycling copies the dense MLP into routed experts only",
                          "leave n_shared_experts at 0")
    return MoE(d_model, 0, n_experts, expert_factory=lambda *_: copy.deepcopy(mlp), **moe_options)
