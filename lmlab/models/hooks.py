"""Named activation sites of a ``TransformerLM`` and hooks that read or replace them.

Every block has the sites of "A Mathematical Framework for Transformer Circuits" (Elhage et al.
2021), named ``blocks.<layer>.<site>`` as in TransformerLens:

- ``resid_pre`` [B, T, d_model]: the residual stream entering the block;
- ``attn_pattern`` [B, H, T, S] (float32, read-only): each head's attention weights;
- ``attn_z`` [B, T, H, head_dim]: each head's weighted values, before the output projection;
- ``attn_out`` [B, T, d_model]: the attention sublayer's output (what it adds to the stream);
- ``resid_mid`` [B, T, d_model] (read-only): the stream between attention and MLP;
- ``mlp_out`` [B, T, d_model]: the MLP's (or mixture of experts') output;
- ``resid_post`` [B, T, d_model]: the stream leaving the block.

A hook is ``fn(activation) -> tensor | None``; a returned tensor replaces the activation (patching,
ablation, steering; patch the stream at ``resid_pre``/``resid_post``). All sites but ``attn_pattern`` sit on module boundaries and use PyTorch's own
module hooks, so a model with no hooks runs exactly the code it ran before: PyTorch already checks
its (empty) hook dicts on every module call. The attention pattern is never formed by the fused
kernel; a block computes it explicitly only while a pattern hook is registered (one ``if`` on an
empty list per block otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ModelError

SITES = ("resid_pre", "attn_pattern", "attn_z", "attn_out", "resid_mid", "mlp_out", "resid_post")

Hook = Callable[[torch.Tensor], "torch.Tensor | None"]


@dataclass
class HookHandle:
    """What ``add_hook`` returns: ``remove()`` takes the hook off the model."""

    remove: Callable[[], None]


def hook_names(lm: nn.Module) -> list[str]:
    """Every hook point of ``lm``, layer by layer, in the order the forward pass reaches them."""
    return [f"blocks.{i}.{site}" for i in range(len(lm.blocks)) for site in SITES]


def parse_hook_name(lm: nn.Module, name: str) -> tuple[int, str]:
    """(layer, site) of ``blocks.<layer>.<site>``, or a ModelError that lists the names there are."""
    parts = name.split(".")
    n = len(getattr(lm, "blocks", ()))
    if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and int(parts[1]) < n and parts[2] in SITES:
        return int(parts[1]), parts[2]
    if not n:
        raise ModelError(f"a {type(lm).__name__} has no hook points", "inspect a transformer model")
    raise ModelError(f"no hook point {name!r}; this model's are blocks.<layer>.<site> with layer 0..{n - 1} "
                     f"and site one of {', '.join(SITES)}", f"e.g. blocks.{n // 2}.resid_post")


def _replacing(fn: Hook, shape: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
               unshape: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = lambda new, old: new):
    """A hook body that shows ``shape(x)`` to ``fn`` and gives back its replacement (or None: keep x)."""
    def call(x: torch.Tensor) -> torch.Tensor | None:
        out = fn(shape(x))
        return None if out is None else unshape(out, x)
    return call


def _read_only(fn: Hook, name: str) -> Callable[[torch.Tensor], None]:
    def call(x: torch.Tensor) -> None:
        if fn(x) is not None:
            raise ModelError(f"{name} is read-only: a hook there may look but not replace",
                             "change a head's output through attn_z, the stream through resid_pre or resid_post")
    return call


def add_hook(lm: nn.Module, name: str, fn: Hook) -> HookHandle:
    """Hook ``fn`` on the site ``name`` of ``lm`` (see the module docstring); returns its handle."""
    layer, site = parse_hook_name(lm, name)
    block = lm.blocks[layer]
    if site == "attn_pattern":  # the fused kernel never forms it: the block computes it while hooked
        body = _read_only(fn, name)
        block.pattern_hooks.append(body)
        return HookHandle(lambda: block.pattern_hooks.remove(body) if body in block.pattern_hooks else None)
    if site == "attn_z":
        heads, width = block.attn.n_heads, block.attn.head_dim
        body = _replacing(fn, lambda x: x.view(*x.shape[:-1], heads, width),
                          lambda new, old: new.reshape(old.shape))
        return _pre_hook(block.attn.o_proj, body)
    if site == "resid_pre":
        return _pre_hook(block, _replacing(fn))
    if site == "resid_mid" and block.pre:  # pre-norm: the stream is what the MLP's norm reads
        return _pre_hook(block.mlp_norm, _read_only(fn, name))
    module = {"attn_out": block.attn.o_proj, "resid_mid": block.attn_norm, "mlp_out": block.mlp,
              "resid_post": block}[site]  # post-norm's mid stream is the attention norm's output
    body = _read_only(fn, name) if site == "resid_mid" else _replacing(fn)
    handle = module.register_forward_hook(lambda mod, args, out: body(out))
    return HookHandle(handle.remove)


def _pre_hook(module: nn.Module, body: Callable[[torch.Tensor], torch.Tensor | None]) -> HookHandle:
    def pre(mod: nn.Module, args: tuple) -> tuple | None:
        new = body(args[0])
        return None if new is None else (new, *args[1:])
    handle = module.register_forward_pre_hook(pre)
    return HookHandle(handle.remove)


@contextlib.contextmanager
def hooked(lm: nn.Module, hooks: dict[str, Hook] | list[tuple[str, Hook]]) -> Iterator[nn.Module]:
    """``lm`` with ``hooks`` ({name: fn} or [(name, fn)]) on for the ``with`` body, off after it."""
    pairs = list(hooks.items()) if isinstance(hooks, dict) else list(hooks)
    for name, _ in pairs:  # every name checked before any hook goes on
        parse_hook_name(lm, name)
    handles = [add_hook(lm, name, fn) for name, fn in pairs]
    try:
        yield lm
    finally:
        for handle in reversed(handles):
            handle.remove()
