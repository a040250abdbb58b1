"""ALBERT (Lan et al., 2020) as switches of the one transformer: factorised embeddings (vocab → E → H),
cross-layer parameter sharing (all / attention / ffn), sentence-order prediction with the masked LM;
its forward pass equals ``transformers.AlbertModel`` with the same weights."""

import json

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, DataError
from lmlab.data.noising import IN_ORDER, SWAPPED, sentence_order_pairs
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.train.denoising import MaskedLMWithSop

V, D, E, LAYERS = 50, 32, 8, 4


def config(**kw):
    return TransformerConfig.from_preset("albert", **{**dict(vocab_size=V, d_model=D, n_layers=LAYERS, n_heads=4,
                                                            d_ff=64, context_length=24), **kw})


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("share", ["none", "all", "attention", "ffn"])
@pytest.mark.parametrize("embedding_size", [0, E])
@pytest.mark.parametrize("mlm_head", [True, False])
def test_parameter_count_equals_the_closed_form(share, embedding_size, mlm_head):
    cfg = config(share_layers=share, embedding_size=embedding_size, mlm_head=mlm_head)
    assert count(TransformerLM(cfg)) == cfg.num_parameters()


def test_sharing_divides_block_parameters_by_the_layer_count_and_factorisation_gives_ve_plus_eh():
    block = count(TransformerLM(config(share_layers="none", n_layers=1)).blocks[0])
    none, shared = config(share_layers="none"), config(share_layers="all")
    assert none.num_parameters() - shared.num_parameters() == (LAYERS - 1) * block
    attention = 4 * D * D + 4 * D + 2 * D  # q, k, v, o with biases, and the attention's LayerNorm
    assert none.num_parameters() - config(share_layers="attention").num_parameters() == (LAYERS - 1) * attention
    assert none.num_parameters() - config(share_layers="ffn").num_parameters() == (LAYERS - 1) * (block - attention)
    plain = TransformerLM(config(mlm_head=False, tie_embeddings=False))
    factorised = TransformerLM(config(embedding_size=E, mlm_head=False, tie_embeddings=False))
    assert count(plain.embed) == V * D
    assert count(factorised.embed) + count(factorised.embed_projection) - D == V * E + E * D  # (+ the bias D)


@pytest.mark.parametrize(("share", "embedding_size", "millions"), [
    ("none", 0, 108), ("attention", 0, 83), ("ffn", 0, 57), ("all", 0, 31),
    ("none", 128, 89), ("attention", 128, 64), ("ffn", 128, 38), ("all", 128, 12)])
def test_albert_base_counts_match_the_papers_table_4(share, embedding_size, millions):
    cfg = TransformerConfig.from_preset("albert", vocab_size=30000, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
                                        context_length=512, share_layers=share, embedding_size=embedding_size,
                                        mlm_head=False)
    assert abs(cfg.num_parameters() / 1e6 - millions) < 1.0  # Lan et al. (2020) report whole millions


def test_shared_layers_are_the_same_tensors_and_stay_shared_after_saving():
    model = TransformerLM(config(share_layers="attention", embedding_size=E))
    first = model.blocks[0]
    for block in model.blocks[1:]:
        assert block.attn.q_proj.weight is first.attn.q_proj.weight and block.attn_norm.weight is first.attn_norm.weight
        assert block.mlp.up.weight is not first.mlp.up.weight
    conf, tensors = model.to_state()
    assert "blocks.1.attn.q_proj.weight" not in tensors and "blocks.1.mlp.up.weight" in tensors
    loaded = TransformerLM.from_state(conf, tensors)
    assert loaded.blocks[3].attn.o_proj.weight is loaded.blocks[0].attn.o_proj.weight
    ids = torch.randint(0, V, (2, 10))
    model.eval()
    assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_forward_equals_transformers_albert_model():
    from transformers import AlbertConfig, AlbertModel

    from lmlab.models.encoder import albert_config, albert_tensors

    torch.manual_seed(0)
    hf_config = AlbertConfig(vocab_size=V, embedding_size=E, hidden_size=D, num_hidden_layers=3, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=24, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)
    theirs = AlbertModel(hf_config).eval()
    ours = TransformerLM(albert_config(hf_config.to_dict())).eval()
    missing, unexpected = ours.load_state_dict(albert_tensors(theirs.state_dict()), strict=False)
    assert not unexpected and all(k.startswith(("blocks.1.", "blocks.2.", "head")) for k in missing)
    ids, types = torch.randint(0, V, (3, 11)), torch.randint(0, 2, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got, _ = ours.hidden_states(ids, attention_mask=mask, token_type_ids=types)
    assert (expected - got)[mask.bool()].abs().max() < 1e-5
    pooler, projection_out = D * D + D, D * E  # theirs has a pooler; ours maps d_model → E for the tied head
    assert count(ours) == theirs.num_parameters() - pooler + projection_out == ours.config.num_parameters()


def test_bad_sizes_and_sharing_modes_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="embedding_size = 32 is not smaller than d_model = 32.*below 32"):
        config(embedding_size=D)
    with pytest.raises(ConfigError, match="share_layers.*none, all, attention, ffn"):
        config(share_layers="ffn-only")


CLS, SEP, PAD, MASK, DOT = 1, 2, 0, 3, 4


def sop(**kw):
    return MaskedLMWithSop(MASK, V, cls_id=CLS, sep_id=SEP, pad_id=PAD, special_ids=[PAD, CLS, SEP, MASK],
                           sentence_end_ids=[DOT], **kw)


def test_sop_pairs_are_consecutive_segments_half_swapped_cut_at_a_sentence_end():
    gen = torch.Generator().manual_seed(0)
    windows = torch.randint(5, V, (400, 16), generator=gen)
    windows[::2, 7] = DOT  # even rows have a sentence end in the middle
    ids, segments, mask, labels = sop().pairs(windows, step=1)
    assert abs(labels.float().mean().item() - 0.5) < 0.07
    for i, (row, m, label, window) in enumerate(zip(ids, mask, labels, windows, strict=True)):
        real = row[:int(m.sum())].tolist()
        assert real[0] == CLS and real[-1] == SEP and real.count(SEP) == 2
        cut = real.index(SEP)
        first, second = real[1:cut], real[cut + 1:-1]
        a, b = (first, second) if label == IN_ORDER else (second, first)
        assert label in (IN_ORDER, SWAPPED) and a + b == window[:13].tolist()  # consecutive, the window's text
        if i % 2 == 0:
            assert a[-1] == DOT and len(a) == 8  # cut right after the sentence end
    with pytest.raises(DataError, match="document 2 has 1 segment"):
        sentence_order_pairs([[[5, 6], [7]], [[8, 9]]])


def test_albert_pretrains_with_sop_from_the_cli_and_one_segment_documents_are_refused(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.models import load_model

    out = tmp_path / "albert"
    common = ["pretrain", "--family", "albert", "--objective", "mlm", "--sop", "--embedding-size", "16",
              "--d-model", "32", "--n-layers", "2", "--n-heads", "2", "--steps", "2", "--context", "32",
              "--batch-size", "4", "--eval-batches", "1", "--json"]
    assert main([*common, "--train", "embedded:test", "--valid", "embedded:test", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid_loss"] is not None
    assert json.loads((out / "run.json").read_text())["sop"] is True
    loaded, _ = load_model(out / "model")
    assert loaded.config.share_layers == "all" and loaded.config.embedding_size == 16
    assert loaded.blocks[1].mlp.up.weight is loaded.blocks[0].mlp.up.weight
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"the cat number {i} sat on the mat .\n" for i in range(50)))
    assert main([*common, "--train", str(lines), "--out", str(tmp_path / "bad")]) == 1
    assert "every document of the training corpus is one segment" in capsys.readouterr().err
