"""Cache policies against NVIDIA's ``kvpress`` on SmolLM2-135M-Instruct (the same GGUF in ``transformers``,
fp32): the presses both have compress the same context at the same ratio, and each layer and KV head
keeps the same positions, and the next token's logits agree within 1e-4.

kvpress 0.5.5 pins ``transformers<5.3``, so it is not a test dependency: install it beside the pinned
``transformers`` with ``pip install --no-deps kvpress==0.5.5 cachetools fire termcolor``; it runs with
transformers 5.25 once two keyword names are mapped (``on_transformers_5``). Without it this module
is skipped.

Mapping (lmlab ↔ kvpress, compression ratio r ↔ budget fraction 1 − r):
streaming (sinks 4, positions in the cache) ↔ KeyRerotationPress(StreamingLLMPress) — the plain
StreamingLLMPress keeps the original rotations; snapkv ↔ SnapKVPress; h2o(recent=0, normalize) ↔
ObservedAttentionPress (H2O proper sums attention and keeps a recent window); tova ↔ TOVAPress;
knorm ↔ KnormPress; pyramidkv ↔ PyramidKVPress. Kept positions are found by matching each kept
value vector to the uncompressed cache's (values carry no rotation), for both libraries alike.
"""

from __future__ import annotations

import pytest
import torch

kvpress = pytest.importorskip("kvpress")
transformers = pytest.importorskip("transformers")

from bench.kvcache import on_transformers_5  # noqa: E402
from lmlab.kvcache import cache_settings, enforce, prefill_setup  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tokenizers import smollm2_gguf  # noqa: E402

RATIO = 0.6
CONTEXT = 200
WINDOW = 32  # SnapKV/PyramidKV observation window, both sides
PAIRS = {
    "streaming": (lambda: kvpress.KeyRerotationPress(kvpress.StreamingLLMPress(RATIO, n_sink=4)), {"sinks": 4}),
    "snapkv": (lambda: kvpress.SnapKVPress(RATIO, window_size=WINDOW, kernel_size=5), {"window": WINDOW, "kernel": 5}),
    "h2o": (lambda: kvpress.ObservedAttentionPress(RATIO), {"recent": 0, "normalize": True}),
    "tova": (lambda: kvpress.TOVAPress(RATIO), {}),
    "knorm": (lambda: kvpress.KnormPress(RATIO), {}),
    "pyramidkv": (lambda: kvpress.PyramidKVPress(RATIO, window_size=WINDOW, kernel_size=5, beta=4),
                  {"window": WINDOW, "kernel": 5, "beta": 4}),
}


@pytest.fixture(scope="module")
def models():
    lm, tok = load_model("smollm2-135m-instruct")
    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32, attn_implementation="eager").eval()
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))[:4000]
    ids = [tok.start_id] + tok.encode(text)
    context, nxt = ids[:CONTEXT], ids[CONTEXT]
    with torch.no_grad():
        full = transformers.DynamicCache()
        hf.model(input_ids=torch.tensor([context]), cache=full)
    values = [layer.values[0].clone() for layer in full.layers]  # [KV, n, D] per layer
    return lm, hf, context, nxt, values


def positions(kept_values: torch.Tensor, values: torch.Tensor) -> list[list[int]]:
    """For each KV head, the context positions whose value vectors the kept ones are (sorted)."""
    out = []
    for head in range(values.shape[0]):
        distance = torch.cdist(kept_values[head].double(), values[head].double())  # [kept, n]
        best = distance.min(dim=1)
        assert (best.values < 1e-3).all(), "a kept value matches no context position"
        out.append(sorted(best.indices.tolist()))
    return out


@pytest.mark.parametrize("name", list(PAIRS))
def test_same_kept_positions_and_next_token_logits_as_kvpress(models, name):
    lm, hf, context, nxt, values = models
    make_press, options = PAIRS[name]
    press = on_transformers_5(make_press())
    cache = transformers.DynamicCache()
    with torch.no_grad(), press(hf):
        hf.model(input_ids=torch.tensor([context]), cache=cache)
    theirs_kept = [positions(layer.values[0], layer_values) for layer, layer_values in zip(cache.layers, values,
                                                                                          strict=True)]
    kept_count = cache.get_seq_length()
    position = kept_count if name == "streaming" else len(context)  # rerotated keys continue after the kept ones
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([[nxt]]), cache=cache,
                    position_ids=torch.tensor([[position]])).logits[0, -1]
    settings = cache_settings(name, 1 - RATIO, **options)
    _, state = lm.prefill([context], setup=prefill_setup([settings]))
    enforce(state, [([0], settings, len(context), "prompt")])
    ours_kept = []
    for layer, layer_values in enumerate(values):
        live = state.live(layer)[0]
        stored = state.values[layer][0, :, :live.shape[1]]
        kept_values = torch.stack([stored[h][live[h]] for h in range(live.shape[0])])
        ours_kept.append(positions(kept_values, layer_values))
    assert ours_kept == theirs_kept
    ours, _ = lm.next_scores(torch.tensor([[nxt]]), state)
    assert (ours[0] - theirs).abs().max() < 1e-4
