"""Calibration for the quantizers that look at activations (GPTQ, AWQ, SmoothQuant).

The model runs block by block, as GPTQ does (Frantar et al. 2022, §4): the inputs of the first
transformer block are recorded once, then each block runs on them with its linear layers'
inputs captured, is quantized by the method, and runs again — now quantized — to give the next
block its inputs, so each layer is fitted to the errors of the layers before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import torch
from torch import nn

from ..core.errors import DataError


def calibration_ids(tokenizer, texts: Iterable[str], sequences: int, length: int) -> torch.Tensor:
    """[sequences, length] token ids cut from the concatenated ``texts``; too little text is an error."""
    need = sequences * length
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text, add_special_tokens=False))
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise DataError(f"the calibration text has {len(ids)} tokens where {sequences} sequences of {length} "
                        f"need {need}", "give more calibration text or fewer/shorter sequences")
    return torch.tensor(ids[:need], dtype=torch.long).view(sequences, length)


class _Stop(Exception):
    pass


def first_block_inputs(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict, bool]:
    """The hidden states, shared context (RoPE, masks) and fused flag the first block receives for ``ids``."""
    seen: dict = {}

    def grab(_module, args):
        seen["x"], seen["ctx"], _, seen["fused"] = args[:4]
        raise _Stop

    handle = model.blocks[0].register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model(ids.to(model.device))
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["x"], seen["ctx"], seen["fused"]


def linear_inputs(block: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """Each ``nn.Linear`` of ``block`` → its inputs during ``run()``, flattened to [tokens, in_features]."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in block.named_modules():
        if isinstance(module, nn.Linear):
            def hook(_m, args, _name=name):
                captured[_name] = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return captured


def blockwise(model: nn.Module, ids: torch.Tensor,
              quantize: Callable[[nn.Module, dict[str, torch.Tensor]], None], head: bool = True) -> None:
    """Quantize ``model`` block by block: ``quantize(module, inputs)`` replaces the linears of one block
    (then of the final head, as a one-layer module ``{"head": ...}``) given their captured inputs."""
    from ..core.progress import progress

    x, ctx, fused = first_block_inputs(model, ids)
    for block in progress(model.blocks, desc="quantizing", unit="block"):
        inputs = linear_inputs(block, partial(block, x, ctx, None, fused))
        quantize(block, inputs)
        with torch.no_grad():
            x = block(x, ctx, None, fused)
    if head and isinstance(model.head, nn.Linear):
        with torch.no_grad():
            h = model.final_norm(x) if model.final_norm is not None else x
        holder = nn.Module()
        holder.head = model.head
        quantize(holder, {"head": h.reshape(-1, h.shape[-1]).float()})
        model.head = holder.head
