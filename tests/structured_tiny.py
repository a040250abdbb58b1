"""A tiny random chat model whose character vocabulary can write JSON and tool calls, for the
constrained-decoding tests. Its output head favours closing characters and the end token a little,
so constrained outputs finish within a few dozen tokens whatever the grammar allows."""

from __future__ import annotations

import torch

from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer

ALPHABET = ('{}[]":,.-+eE0123456789 abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_\\/<>|\n'
            "éü@%!?'#$&*()=;~^`")
TEMPLATE = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
CLOSERS = '}]"'


def make_tiny(closing_bias: float = 2.0, seed: int = 0):
    """(model, char tokenizer): a random 2-layer LLaMA-style model over ALPHABET."""
    tok = WordLevelTokenizer("char").train([ALPHABET])
    tok.chat_template = TEMPLATE
    torch.manual_seed(seed)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                        n_kv_heads=2, context_length=1024)
    lm = TransformerLM(cfg).eval()
    lm.eos_id, lm.bos_id = tok.eos_id, tok.bos_id
    with torch.no_grad():
        lm.head.weight.mul_(4)
        bias = torch.zeros(tok.vocab_size)
        for c in CLOSERS:
            bias[tok.token_to_id(c)] = closing_bias
        bias[tok.eos_id] = closing_bias
        head = torch.nn.Linear(cfg.d_model, tok.vocab_size, bias=True)
        head.weight.copy_(lm.head.weight)
        head.bias.copy_(bias)
        lm.head = head
    return lm, tok
