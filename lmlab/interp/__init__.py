"""Interpretability on any lmlab transformer, through the hook points it offers (``lmlab.models.hooks``).

``cache`` runs a model and keeps named activations; ``lens`` reads every layer through the output
head (the logit lens); ``patching`` moves activations between a clean and a corrupted prompt
(activation and path patching, head ablation); ``steering`` adds a difference of mean activations;
``probe`` fits linear probes on cached activations; ``sae`` trains sparse autoencoders on the
residual stream with the one trainer and shows each feature's top-activating examples;
``attention`` draws attention maps.
"""

from .cache import run_with_cache
from .lens import logit_lens

__all__ = ["logit_lens", "run_with_cache"]
