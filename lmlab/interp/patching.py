"""Activation patching, path patching and head ablation between a clean and a corrupted prompt.

Activation patching (causal tracing; Meng et al. 2022, "Locating and Editing Factual Associations
in GPT"; Wang et al. 2022, "Interpretability in the Wild") runs the corrupted prompt with one
activation taken from the clean run and measures how much of the clean behaviour comes back.
Path patching (Wang et al. 2022, §3.1; Goldowsky-Dill et al. 2023) isolates one path: the sender
head's output from the corrupted run reaches the receiver (the residual stream entering a later
layer, or the logits) while every other head stays at its clean value. Head ablation replaces
heads' outputs (``attn_z``) by zeros or by their mean.

A metric maps logits [B, T, V] to a scalar tensor; ``logit_difference`` is the usual one
(logit of the right answer minus the wrong one at the last position, averaged over rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..core.errors import InputError
from ..core.validate import check_choice, check_number
from ..models.hooks import hooked
from .cache import run_with_cache

Metric = Callable[[torch.Tensor], torch.Tensor]
PATCH_SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")
ABLATIONS = ("zero", "mean")


def logit_difference(right: int | Sequence[int], wrong: int | Sequence[int], position: int = -1) -> Metric:
    """logit[right] − logit[wrong] at ``position``, averaged over rows (one id, or one per row)."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0])
        at = logits[:, position].float()
        return (at[rows, torch.as_tensor(right)] - at[rows, torch.as_tensor(wrong)]).mean()
    return metric


def _same_shape(clean: torch.Tensor, corrupted: torch.Tensor) -> None:
    if clean.shape != corrupted.shape:
        raise InputError(f"the clean prompt has shape {tuple(clean.shape)} and the corrupted one "
                         f"{tuple(corrupted.shape)}; patching pairs positions one to one",
                         "use prompts with the same number of tokens")


def _replace_position(source: torch.Tensor, position: int, head: int | None = None):
    def hook(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        if head is None:
            x[:, position] = source[:, position]
        else:
            x[:, position, head] = source[:, position, head]
        return x
    return hook


@torch.no_grad()
def run_metric(lm: nn.Module, ids: torch.Tensor, metric: Metric, hooks=()) -> float:
    """``metric`` of ``lm``'s logits on ``ids`` with ``hooks`` ([(name, fn)]) on."""
    with hooked(lm, list(hooks)):
        logits, _ = lm(ids.to(lm.device))
    return float(metric(logits))


@torch.no_grad()
def activation_patching(lm: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric, *,
                        site: str = "resid_pre", progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The metric [n_layers, T] of the corrupted run with ``site`` at (layer, position) taken from
    the clean run. ``progress(layers_done)`` is called after each layer."""
    check_choice("site", site, PATCH_SITES)
    _same_shape(clean, corrupted)
    names = [f"blocks.{i}.{site}" for i in range(len(lm.blocks))]
    _, cache = run_with_cache(lm, clean, names)
    out = torch.empty(len(names), clean.shape[1])
    for layer, name in enumerate(names):
        for pos in range(clean.shape[1]):
            out[layer, pos] = run_metric(lm, corrupted, metric, [(name, _replace_position(cache[name], pos))])
        if progress is not None:
            progress(layer + 1)
    return out


@torch.no_grad()
def head_patching(lm: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric, *,
                  position: int | None = None) -> torch.Tensor:
    """The metric [n_layers, n_heads] of the corrupted run with one head's output (``attn_z``) taken
    from the clean run, at every position or only at ``position``."""
    _same_shape(clean, corrupted)
    names = [f"blocks.{i}.attn_z" for i in range(len(lm.blocks))]
    _, cache = run_with_cache(lm, clean, names)
    heads = lm.blocks[0].attn.n_heads
    out = torch.empty(len(names), heads)
    for layer, name in enumerate(names):
        for head in range(heads):
            def hook(z: torch.Tensor, source=cache[name], head=head) -> torch.Tensor:
                z = z.clone()
                at = slice(None) if position is None else position
                z[:, at, head] = source[:, at, head]
                return z
            out[layer, head] = run_metric(lm, corrupted, metric, [(name, hook)])
    return out


@torch.no_grad()
def path_patching(lm: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor, metric: Metric, *,
                  sender: tuple[int, int], receiver: int | None = None) -> float:
    """The clean run's metric when only the path sender head → receiver carries the corrupted
    activation (Wang et al. 2022, §3.1). ``sender`` is (layer, head); ``receiver`` a later layer
    whose input stream receives the path, or None for the logits (the direct path).

    1. run clean with the sender's ``attn_z`` from the corrupted run and every other head of the
       layers from the sender up to the receiver frozen at its clean value (MLPs recompute);
    2. without a receiver layer, that run's metric is the answer; else keep the receiver's
       ``resid_pre`` and run clean once more with it patched in.
    """
    _same_shape(clean, corrupted)
    n = len(lm.blocks)
    s_layer, s_head = sender
    check_number("sender layer", s_layer, low=0, high=n - 1, integer=True)
    check_number("sender head", s_head, low=0, high=lm.blocks[0].attn.n_heads - 1, integer=True)
    end = n if receiver is None else receiver
    if receiver is not None:
        check_number("receiver layer", receiver, low=s_layer + 1, high=n - 1, integer=True)
    z_names = [f"blocks.{i}.attn_z" for i in range(s_layer, end)]
    _, clean_z = run_with_cache(lm, clean, z_names)
    _, corrupt_z = run_with_cache(lm, corrupted, [z_names[0]])

    def frozen(name: str):
        def hook(z: torch.Tensor) -> torch.Tensor:
            z = clean_z[name].clone()
            if name == z_names[0]:
                z[:, :, s_head] = corrupt_z[name][:, :, s_head]
            return z
        return hook

    hooks = [(name, frozen(name)) for name in z_names]
    if receiver is None:
        return run_metric(lm, clean, metric, hooks)
    stored: dict[str, torch.Tensor] = {}
    r_name = f"blocks.{receiver}.resid_pre"
    with hooked(lm, [*hooks, (r_name, lambda x: stored.__setitem__("x", x.clone()))]):
        lm(clean.to(lm.device))
    return run_metric(lm, clean, metric, [(r_name, lambda x: stored["x"])])


@torch.no_grad()
def ablation_hooks(lm: nn.Module, heads: Sequence[tuple[int, int]], *, mode: str = "zero",
                   reference: torch.Tensor | None = None) -> list[tuple[str, Callable]]:
    """Hooks that ablate ``heads`` [(layer, head)]: their ``attn_z`` set to zero, or (``mode='mean'``)
    to its mean over the rows and positions of ``reference`` ids."""
    check_choice("mode", mode, ABLATIONS)
    n, h = len(lm.blocks), lm.blocks[0].attn.n_heads
    for layer, head in heads:
        check_number("ablated layer", layer, low=0, high=n - 1, integer=True)
        check_number("ablated head", head, low=0, high=h - 1, integer=True)
    names = sorted({f"blocks.{layer}.attn_z" for layer, _ in heads})
    means = {}
    if mode == "mean":
        if reference is None:
            raise InputError("mean ablation needs reference prompts to average over", "pass reference ids")
        _, cache = run_with_cache(lm, reference, names)
        means = {name: cache[name].mean(dim=(0, 1)) for name in names}

    def hook(layer: int, chosen: list[int]):
        def ablate(z: torch.Tensor) -> torch.Tensor:
            z = z.clone()
            for head in chosen:
                z[:, :, head] = 0.0 if mode == "zero" else means[f"blocks.{layer}.attn_z"][head]
            return z
        return ablate

    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return [(f"blocks.{layer}.attn_z", hook(layer, chosen)) for layer, chosen in sorted(by_layer.items())]


def ablation_scan(lm: nn.Module, ids: torch.Tensor, metric: Metric, *, mode: str = "zero",
                  reference: torch.Tensor | None = None) -> torch.Tensor:
    """The metric [n_layers, n_heads] with each head ablated alone."""
    n, h = len(lm.blocks), lm.blocks[0].attn.n_heads
    out = torch.empty(n, h)
    for layer in range(n):
        for head in range(h):
            hooks = ablation_hooks(lm, [(layer, head)], mode=mode, reference=ids if reference is None else reference)
            out[layer, head] = run_metric(lm, ids, metric, hooks)
    return out
