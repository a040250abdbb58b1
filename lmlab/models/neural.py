"""``NeuralLM``: what every PyTorch language model shares — the protocol on top of ``forward``.

A subclass implements ``forward(ids, state=None) -> (logits [B, T, V], state)`` and
``initial_state`` / ``select_state``, plus ``config_dict()``; this base turns that into
``next_logprobs``, ``score``, ``to_state`` / ``from_state`` (config + safetensors, tied
weights stored once) and ``device``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelError
from ..lm import LanguageModel, State, as_id_tensor

SPECIAL_ROLES = ("bos_id", "eos_id", "pad_id", "unk_id")
#: ``score`` computes vocabulary-sized logits for at most this many floats at a time (64 MiB in fp32),
#: so scoring a long window keeps the log-probabilities of its tokens, never all of its logits
SCORE_LOGITS_BUDGET = 1 << 24


def unique_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with tied (storage-sharing) entries kept once, on the CPU, ready for safetensors."""
    tensors, seen = {}, set()
    for name, tensor in state_dict.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:  # a tied weight: stored once, re-tied by the model's constructor
            continue
        seen.add(key)
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors


class NeuralLM(nn.Module, LanguageModel):
    """Base class of the PyTorch LMs (feed-forward, recurrent, transformer)."""

    model_type: str = ""

    def set_special_ids(self, special: dict[str, int | None] | None) -> None:
        for role in SPECIAL_ROLES:
            setattr(self, role, None if special is None else special.get(role))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def config_dict(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (JSON-serialisable): by default the
        ``args`` dict a subclass keeps (the recurrent, feed-forward and RNN encoder–decoder models)."""
        return dict(self.args)

    @property
    def vocab_size(self) -> int:
        return self.args["vocab_size"]

    # --- protocol (inference: no autograd graph; training calls forward) ----------------------
    @torch.no_grad()
    def next_scores(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The logits [B, V] of the token after ``tokens`` (float32), and the state."""
        tokens = as_id_tensor(tokens, self.vocab_size, self.device)
        logits, state = self(tokens, state)
        return logits[:, -1].float(), state

    def next_logprobs(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        scores, state = self.next_scores(tokens, state)
        return F.log_softmax(scores, dim=-1), state

    @torch.no_grad()
    def score(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities [B, T-1]. A model that exposes its last-layer states
        (``hidden_states`` and ``logits``, as a transformer does) is scored a slice of positions at a
        time, so at most ``SCORE_LOGITS_BUDGET`` logits exist at once, whatever the window's length."""
        ids = as_id_tensor(ids, self.vocab_size, self.device)
        if ids.shape[1] < 2:
            return torch.zeros(ids.shape[0], 0, device=ids.device)
        targets = ids[:, 1:]
        if not (hasattr(self, "hidden_states") and hasattr(self, "logits")):
            logits, _ = self(ids[:, :-1], None)
            return F.log_softmax(logits.float(), dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
        hidden, _ = self.hidden_states(ids[:, :-1])
        step = max(1, SCORE_LOGITS_BUDGET // (ids.shape[0] * self.vocab_size))
        out = torch.empty(targets.shape, dtype=torch.float32, device=ids.device)
        for start in range(0, targets.shape[1], step):
            logprobs = F.log_softmax(self.logits(hidden[:, start:start + step]).float(), dim=-1)
            out[:, start:start + step] = logprobs.gather(2, targets[:, start:start + step].unsqueeze(2)).squeeze(2)
        return out

    # --- model directory ---------------------------------------------------------------------
    def state_config(self) -> dict[str, Any]:
        """config.json of this model: its type, constructor arguments and special ids."""
        return {"model_type": self.model_type, **self.config_dict(),
                **{role: getattr(self, role) for role in SPECIAL_ROLES}}

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config.json, tensors); quantized layers (``lmlab.models.quantized``) are listed in the config's
        ``quantization`` entry so that loading rebuilds them without quantizing again."""
        from .quantized import quantization_config

        config = self.state_config()
        quantization = quantization_config(self)
        if quantization:
            config["quantization"] = quantization
        return config, unique_tensors(self.state_dict())

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor], **kwargs: Any) -> NeuralLM:
        args = {k: v for k, v in config.items() if k not in ("model_type", "quantization") and k not in SPECIAL_ROLES}
        model = cls.from_config(args)
        if config.get("quantization"):
            from .quantized import use_quantized_layers

            use_quantized_layers(model, config["quantization"])
        model.set_special_ids({role: config.get(role) for role in SPECIAL_ROLES})
        expected = model.state_dict()
        missing = [k for k in expected if k not in tensors and not model.is_tied(k)]
        unexpected = [k for k in tensors if k not in expected]
        if missing or unexpected:
            raise ModelError(f"the weights do not match config.json ({len(missing)} missing, "
                             f"{len(unexpected)} unexpected: {', '.join((missing + unexpected)[:4])})",
                             "the model directory is damaged or its files come from different models")
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ModelError(f"weight {name} has shape {tuple(tensor.shape)}, config.json implies "
                                 f"{tuple(expected[name].shape)}", "the files come from different models")
        model.load_state_dict(tensors, strict=False)
        model.eval()
        return model

    @classmethod
    def from_config(cls, args: dict[str, Any]) -> NeuralLM:
        return cls(**args)

    def is_tied(self, name: str) -> bool:
        """True for a state-dict entry that shares storage with an earlier one."""
        state = self.state_dict()
        ptr = state[name].data_ptr()
        return any(state[other].data_ptr() == ptr for other in state if other != name
                   and list(state).index(other) < list(state).index(name))
