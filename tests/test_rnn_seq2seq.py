"""The attentional RNN encoder–decoder: incremental decoding equals one teacher-forced pass for every
attention and cell, source padding changes nothing, the attention weights and the pointer-generator
mixture equal their formulas computed by hand; a toy translation learned through ``pretrain`` and
decoded greedily, by beam search and through ``lmlab translate`` (BLEU, attention plot); and the
transformer's cross-attention weights read back exactly."""

from __future__ import annotations

import json

import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import ConfigError
from lmlab.models.rnn_seq2seq import RNNEncoderDecoder

CASES = [("bahdanau", False, "gru", True), ("bahdanau", True, "lstm", True), ("general", False, "lstm", True),
         ("general", True, "gru", False), ("dot", False, "gru", False), ("none", False, "lstm", True)]


def tiny(attention="bahdanau", copy=False, cell="gru", input_feeding=True, n_layers=2, seed=0):
    torch.manual_seed(seed)
    return RNNEncoderDecoder(40, attention=attention, copy=copy, cell=cell, input_feeding=input_feeding,
                             d_embed=12, d_hidden=16, n_layers=n_layers, dropout=0.0).eval()


@torch.no_grad()
@pytest.mark.parametrize("attention,copy,cell,feeding", CASES)
def test_incremental_decoding_equals_teacher_forcing_and_ignores_padding(attention, copy, cell, feeding):
    model = tiny(attention, copy, cell, feeding)
    source = torch.randint(3, 40, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    ids = torch.randint(3, 40, (3, 6))
    full, _ = model(ids, source=source, source_mask=mask)
    state, steps = model.start(source, mask), []
    for t in range(ids.shape[1]):
        scores, state = model(ids[:, t:t + 1], state)
        steps.append(scores)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=0)
    alone, _ = model(ids[1:2], source=source[1:2, :4])
    torch.testing.assert_close(alone, full[1:2], atol=2e-5, rtol=0)
    if copy:  # a distribution: the scores are log-probabilities
        torch.testing.assert_close(full.logsumexp(-1), torch.zeros(3, 6), atol=1e-5, rtol=0)
    if attention != "none":
        assert state.attention.shape == (3, 1, 7) and not state.attention[1, 0, 4:].any()


@torch.no_grad()
def test_bahdanau_and_luong_weights_by_hand():
    source, ids = torch.randint(3, 40, (1, 5)), torch.randint(3, 40, (1, 1))
    model = tiny("bahdanau", n_layers=1)
    state = model.start(source)
    _, after = model(ids, state)
    s_prev, h = state.hidden[0], state.memory[0]  # s_{t-1} [1, H], encoder states [S, H]
    scores = torch.tanh(s_prev @ model.score_query.weight.T + h @ model.score_key.weight.T + model.score_key.bias)
    expect = torch.softmax((scores @ model.score_v.weight.T).squeeze(-1), dim=-1)
    torch.testing.assert_close(after.attention[0, 0], expect, atol=1e-6, rtol=0)
    for kind in ("dot", "general"):
        model = tiny(kind, n_layers=1, input_feeding=False)
        state = model.start(source)
        _, after = model(ids, state)
        s_t, h = after.hidden[0], state.memory[0]  # Luong scores with the new state
        keys = h if kind == "dot" else h @ model.score_key.weight.T
        torch.testing.assert_close(after.attention[0, 0], torch.softmax(keys @ s_t[0], dim=-1), atol=1e-6, rtol=0)


@torch.no_grad()
def test_pointer_generator_mixes_vocabulary_and_copy_distributions():
    source = torch.tensor([[5, 9, 5, 2]])
    ids = torch.tensor([[3, 7]])
    model = tiny("general", copy=True, n_layers=1, input_feeding=False)
    plain = tiny("general", copy=False, n_layers=1, input_feeding=False)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("gate.")})
    logits, state = plain(ids, source=source)
    mixed, _ = model(ids, source=source)
    # recompute the gate from its inputs: [context; decoder state; input embedding]
    queries, _ = model.decoder(model.embed(ids), model.start(source).hidden)
    contexts = torch.bmm(state.attention, state.memory)
    gate = torch.sigmoid(model.gate(torch.cat([contexts, queries, model.embed(ids)], -1)))
    copy = torch.zeros(1, 2, 40).scatter_add(2, source.unsqueeze(1).expand(-1, 2, -1), state.attention)
    expect = gate * torch.softmax(logits, -1) + (1 - gate) * copy
    torch.testing.assert_close(mixed.exp(), expect, atol=1e-6, rtol=0)
    assert torch.allclose(copy[0, :, 5], state.attention[0, :, 0] + state.attention[0, :, 2])  # repeats add up


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="copies through the attention"):
        RNNEncoderDecoder(10, attention="none", copy=True)
    with pytest.raises(ConfigError, match="odd"):
        RNNEncoderDecoder(10, d_hidden=7)
    with pytest.raises(ConfigError):
        RNNEncoderDecoder(10, attention="luong")


def train_toy(tmp_path, *settings: str) -> tuple:
    """Toy pairs (test_seq2seq_pretrain's reversal task) and an rnn-seq2seq run on them with
    ``settings`` on top of small common ones; (run directory, test sources, test targets)."""
    from test_seq2seq_pretrain import write_pairs

    from lmlab.cli import main

    write_pairs(tmp_path / "data", "train", 400)
    test_src, test_tgt = write_pairs(tmp_path / "data", "test", 20, seed=9)
    out = tmp_path / "run"
    assert main(["pretrain", "--family", "rnn-seq2seq", "--objective", "seq2seq", "--train",
                 str(tmp_path / "data" / "train"), "--pair", "xx-yy", "--d-embed", "24", "--d-hidden", "48",
                 "--dropout", "0", "--lr", "1e-2", "--batch-size", "16", "--out", str(out), "--quiet",
                 *settings]) == 0
    return out, test_src, test_tgt


@pytest.mark.slow
def test_rnn_learns_a_toy_translation_through_pretrain_and_translate(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.eval.bleu import corpus_bleu
    from lmlab.generate.translate import translate
    from lmlab.models import load_model

    out, test_src, test_tgt = train_toy(tmp_path, "--attention", "bahdanau", "--copy", "true", "--tokenizer", "word",
                                        "--steps", "250", "--context", "8")
    capsys.readouterr()
    model, tok = load_model(out / "model")
    assert isinstance(model, RNNEncoderDecoder) and model.args["copy"]
    outputs = translate(model, tok, test_src)
    assert sum(o == t for o, t in zip(outputs, test_tgt, strict=True)) >= 16
    assert translate(model, tok, test_src[:5], beam_size=3, length_penalty=0.6) == outputs[:5]
    plot = tmp_path / "attention.png"
    assert main(["translate", "--model", str(out / "model"), str(tmp_path / "data" / "test.xx"), "--references",
                 str(tmp_path / "data" / "test.yy"), "--beam-size", "2", "--attention-plot", str(plot),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bleu"] == round(corpus_bleu(result["translations"], [test_tgt]).score, 2)
    assert result["bleu_lowercased"] >= result["bleu"] and plot.read_bytes()[:4] == b"\x89PNG"


@torch.no_grad()
def test_transformer_cross_attention_weights_reproduce_the_attention_output():
    from lmlab.generate.translate import alignment
    from lmlab.models.config import TransformerConfig
    from lmlab.models.seq2seq import EncoderDecoder
    from lmlab.tokenizers import WordLevelTokenizer

    tok = WordLevelTokenizer("word").train(["a b c d e f g"])
    torch.manual_seed(0)
    model = EncoderDecoder(TransformerConfig.from_preset("bart", vocab_size=tok.vocab_size, d_model=16, n_layers=2,
                                                         n_heads=4, context_length=16)).eval()
    model.set_special_ids({"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id})
    source, ids = torch.tensor([[4, 5, 6, 7, tok.eos_id]]), torch.tensor([[tok.bos_id, 8, 9]])
    inputs = []
    hooks = [b.cross.o_proj.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
             for b in model.decoder.blocks]
    weights = model.cross_attention(source, ids)
    for h in hooks:
        h.remove()
    assert weights.shape == (2, 4, 3, 5)
    state = model.start(source)
    for layer, values in enumerate(state.cross_values):
        merged = (weights[layer] @ values[0]).transpose(0, 1).reshape(3, 16)
        torch.testing.assert_close(merged, inputs[-2 + layer][0], atol=1e-5, rtol=0)
    w, src, tgt = alignment(model, tok, "a b c d", "e f")
    assert w.shape == (len(tgt), len(src)) and src[-1] == tok.id_to_token(tok.eos_id)
    torch.testing.assert_close(w.sum(-1), torch.ones(len(tgt)))


@pytest.mark.slow
def test_one_model_translates_both_ways_with_target_language_tags(tmp_path, capsys, no_progress):
    import random

    from lmlab.cli import main
    from lmlab.data import from_texts
    from lmlab.data.parallel import both_directions
    from lmlab.generate.translate import translate
    from lmlab.models import load_model

    lexicon = dict(zip("red green blue cat dog fish big small".split(),
                       "rot grün blau katze hund fisch groß klein".split(), strict=True))
    rng = random.Random(0)
    rows = [rng.sample(sorted(lexicon), 3) for _ in range(420)]
    en = [" ".join(r) for r in rows]
    de = [" ".join(lexicon[w] for w in reversed(r)) for r in rows]
    data = tmp_path / "data"
    data.mkdir()
    for lang, lines in (("en", en), ("de", de)):
        (data / f"train.{lang}").write_text("\n".join(lines[:400]) + "\n", encoding="utf-8")
    sources, targets = both_directions((from_texts(en[:2]), from_texts(de[:2])), "en-de")
    assert list(sources) == [f"<2de> {en[0]}", f"<2de> {en[1]}", f"<2en> {de[0]}", f"<2en> {de[1]}"]
    assert list(targets) == [de[0], de[1], en[0], en[1]]
    out = tmp_path / "run"
    assert main(["pretrain", "--family", "rnn-seq2seq", "--attention", "general", "--objective", "seq2seq",
                 "--train", str(data / "train"), "--pair", "en-de", "--both-directions", "--tokenizer", "word",
                 "--d-embed", "24", "--d-hidden", "48", "--dropout", "0", "--steps", "300", "--lr", "1e-2",
                 "--batch-size", "16", "--context", "8", "--out", str(out), "--quiet"]) == 0
    model, tok = load_model(out / "model")
    to_de = translate(model, tok, en[400:], target_language="de")
    to_en = translate(model, tok, de[400:], target_language="en")
    assert sum(a == b for a, b in zip(to_de, de[400:], strict=True)) >= 16
    assert sum(a == b for a, b in zip(to_en, en[400:], strict=True)) >= 16
    assert main(["translate", "--model", str(out / "model"), "--text", "red cat", "--quiet"]) == 0
    with pytest.raises(ConfigError, match="has no <2fr> token"):
        translate(model, tok, en[:1], target_language="fr")


@pytest.mark.slow
def test_separate_source_and_target_vocabularies(tmp_path, capsys, no_progress):
    from lmlab.cli import main
    from lmlab.generate.translate import translate
    from lmlab.models import load_model
    from lmlab.tokenizers import load

    out, test_src, test_tgt = train_toy(tmp_path, "--attention", "dot", "--tokenizer", "char", "--source-tokenizer",
                                        "word", "--steps", "300", "--context", "24")
    capsys.readouterr()
    model, tok = load_model(out / "model")
    source_tok = load(out / "model" / "source")
    assert model.source_embed.num_embeddings == source_tok.vocab_size != tok.vocab_size
    outputs = translate(model, tok, test_src, source_tokenizer=source_tok)
    assert sum(o == t for o, t in zip(outputs, test_tgt, strict=True)) >= 14
    assert main(["translate", "--model", str(out / "model"), str(tmp_path / "data" / "test.xx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["translations"] == outputs
    with pytest.raises(ConfigError, match="one vocabulary"):
        RNNEncoderDecoder(10, copy=True, source_vocab_size=12)
