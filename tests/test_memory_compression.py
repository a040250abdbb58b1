"""The Compressive Transformer's compression functions and attention-reconstruction loss
(lmlab.models.memory_compression): pooling by hand, the learned convolution's identity start, the loss
falling as it trains, and no gradient from it into the main network."""

import pytest
import torch

from lmlab.core.errors import ConfigError
from lmlab.models.config import TransformerConfig
from lmlab.models.memory_compression import (
    MemoryCompression,
    content_attention,
    reconstruction_loss,
)
from lmlab.models.transformer import TransformerLM

TINY = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, context_length=8)


def _model(**switches):
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.from_preset("llama", **{**TINY, **switches}))


def test_pooling_and_the_convolution_start_by_hand():
    old = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)
    mean, most = MemoryCompression(3, 3, "mean"), MemoryCompression(3, 3, "max")
    assert mean(old).shape == most(old).shape == (2, 3, 3)  # ⌈7 / 3⌉ slots
    assert torch.equal(mean(old)[0, 1], old[0, 3:6].mean(0)) and torch.equal(mean(old)[0, 2], old[0, 6])
    assert torch.equal(most(old)[1, 0], old[1, :3].max(0).values)
    conv = MemoryCompression(3, 3, "conv")
    assert conv(old).shape == (2, 3, 3)
    assert torch.allclose(conv(old)[:, :2], mean(old)[:, :2], atol=1e-5)  # it starts as mean pooling
    assert torch.allclose(conv(old)[:, 2], old[:, 6], atol=1e-5)  # a short window padded with its last input
    assert sum(p.numel() for p in conv.parameters()) == 3 * 3 * 3 + 3


def test_identity_compression_reconstructs_exactly_and_the_model_equals_one_pass():
    model = _model(memory_length=8, compressed_memory=64, compression_rate=1, compression="conv").eval()
    assert sum(p.numel() for p in model.parameters()) == model.config.num_parameters()
    block = model.blocks[0]
    h, old = torch.randn(2, 5, 32), torch.randn(2, 6, 32)
    with torch.no_grad():
        assert float(reconstruction_loss(block, h, old, block.compression(old))) < 1e-12
        assert float(reconstruction_loss(block, h, old, old[:, :3])) > 1e-4  # the loss does see a difference
    ids = torch.randint(0, 40, (2, 24))
    with torch.no_grad():
        whole, _ = model(ids, model.initial_state(2))
        state, parts = None, []
        for start in range(0, 24, 8):
            logits, state = model(ids[:, start:start + 8], state)
            parts.append(logits)
    assert torch.allclose(whole, torch.cat(parts, 1), atol=1e-5) and state[1].shape[2] == 16


def test_the_reconstruction_loss_falls_as_the_compression_trains():
    model = _model(memory_length=4, compressed_memory=8, compression_rate=3, compression="conv")
    block = model.blocks[1]
    g = torch.Generator().manual_seed(1)
    h, old = torch.randn(2, 8, 32, generator=g), torch.randn(2, 12, 32, generator=g)
    optimizer = torch.optim.Adam(block.compression.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = reconstruction_loss(block, h, old, block.compression(old))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_the_auxiliary_loss_reaches_the_compression_only():
    from lmlab.train.trainer import TrainingHooks

    model = _model(memory_length=4, compressed_memory=8, compression_rate=2, compression="conv",
                   compression_loss=0.5)
    hooks = TrainingHooks(model)
    assert hooks.losses == [block.compression for block in model.blocks]
    ids = torch.randint(0, 40, (2, 16))
    _, memory = model(ids[:, :8])  # 8 inputs into a memory of 4: 4 evicted and compressed to 2
    assert memory[1].shape[2] == 2 and not memory[1].requires_grad
    total = hooks.add_auxiliary_losses(torch.zeros(()))
    per_layer = [float(b.compression.last_loss.detach()) for b in model.blocks]
    assert float(total.detach()) == pytest.approx(0.5 * sum(per_layer)) and min(per_layer) > 0
    assert set(hooks.stats()["compression_loss"]) == {"blocks.0.compression", "blocks.1.compression"}
    total.backward()
    learned = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learned == {f"blocks.{i}.compression.conv.{w}" for i in (0, 1) for w in ("weight", "bias")}
    # the loss compares the layer's content attention over the old memories with that over f_c(old)
    block = model.blocks[0]
    h, old = torch.randn(1, 3, 32), torch.randn(1, 4, 32)
    with torch.no_grad():
        expected = (content_attention(block, h, old) - content_attention(block, h, block.compression(old))).pow(2).mean()
        assert float(reconstruction_loss(block, h, old, block.compression(old))) == pytest.approx(float(expected))
    # a segment that evicts nothing adds nothing, yet gives f_c a (zero) gradient, as DDP expects
    model.zero_grad()
    model(ids[:, :2])
    zero = hooks.add_auxiliary_losses(torch.zeros(()))
    assert float(zero.detach()) == 0.0
    zero.backward()
    conv = model.blocks[0].compression.conv
    assert conv.weight.grad is not None and not conv.weight.grad.any()


def test_max_pooled_memory_and_bad_settings():
    model = _model(memory_length=4, compressed_memory=8, compression_rate=2, compression="max").eval()
    ids = torch.randint(0, 40, (1, 8))
    with torch.no_grad():
        _, memory = model(ids)
        first = model.embed(ids)  # layer 0's input
    assert torch.equal(memory[1][0, 0], first[0, :4].view(2, 2, 32).max(1).values)
    with pytest.raises(ConfigError, match="compression"):
        TransformerConfig.from_preset("llama", **TINY, memory_length=4, compressed_memory=4, compression="avg")
    with pytest.raises(ConfigError, match="dot-product"):
        TransformerConfig.from_preset("llama", **TINY, memory_length=4, compressed_memory=4, compression="conv",
                                      score="additive")
