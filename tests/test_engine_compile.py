"""torch.compile'd decoding (``Engine(compile=True)``, ``--compile``) gives the eager engine's greedy tokens."""

from __future__ import annotations

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.generate.engine import Engine, Request
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM


@pytest.mark.slow
def test_compiled_decoding_gives_the_same_greedy_tokens():
    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=40, d_model=32, n_layers=2, n_heads=4,
                                                     n_kv_heads=2, context_length=64)).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init, so greedy paths are not ties
        lm.head.weight.mul_(40)
    request = Request([1, 2, 3], max_new_tokens=10, stop_ids=[])
    eager = Engine(lm, greedy=True).generate([request])[0]
    try:
        compiled = Engine(lm, greedy=True, compile=True).generate([request])[0]
    except Exception as err:  # no working C++ toolchain for inductor here
        if "InductorError" in type(err).__name__ or "CppCompileError" in repr(err):
            pytest.skip(f"inductor cannot compile here: {type(err).__name__}")
        raise
    assert compiled.ids == eager.ids
    assert compiled.logprobs == pytest.approx(eager.logprobs, abs=1e-4)


def test_compile_on_a_protocol_model_is_a_clear_error():
    from lmlab.ngram.unigram import UnigramLM

    with pytest.raises(LmlabError, match="transformer"):
        Engine(UnigramLM(torch.ones(5)), compile=True)
