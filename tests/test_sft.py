"""SFT data and objective: assistant-token masks by hand, packing that changes nothing, truncation
counts, clear errors; and the transformer features it relies on (segments, prefixes, soft prompts)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from sft_tiny import TEMPLATE, tiny_model, tiny_tokenizer

from lmlab.core.errors import DataError, ModelError
from lmlab.peft import (
    LoraConfig,
    PrefixConfig,
    PromptConfig,
    apply_lora,
    apply_prefix,
    apply_prompt,
    cast_frozen_linears,
)
from lmlab.tokenizers.chat_template import chat_prompt, chat_text
from lmlab.train.objectives import token_loss
from lmlab.train.sft import (
    SFTBatches,
    SFTObjective,
    build_sft_data,
    collate,
    conversation,
    read_conversations,
    render_example,
    sft_loss,
)

CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "ok?"}, {"role": "assistant", "content": "ja"}]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_assistant_tokens_by_hand(tok):
    ex = render_example(tok, CHAT)
    text = "<u>hi|<a>yo|<u>ok?|<a>ja|"
    assert tok.decode(ex.ids) == text and len(ex.ids) == len(text)
    marked = "".join(c for c, a in zip(text, ex.assistant, strict=True) if a)
    assert marked == "yo|ja|"  # each reply and its end-of-turn marker; never the prompt
    # the context before a reply is exactly what chat_prompt feeds the model at inference
    assert ex.ids[:text.index("yo")] == chat_prompt(tok, CHAT[:1])


def test_row_formats_and_errors(tok):
    alpaca = conversation({"instruction": "add", "input": "1 2", "output": "3"})
    assert alpaca == [{"role": "user", "content": "add\n\n1 2"}, {"role": "assistant", "content": "3"}]
    assert conversation({"prompt": "p", "completion": "c"})[1] == {"role": "assistant", "content": "c"}
    with pytest.raises(DataError, match="no assistant turn"):
        conversation({"messages": [{"role": "user", "content": "hi"}]}, "data.jsonl:3")
    with pytest.raises(DataError, match="no conversation"):
        conversation({"text": "hi"})
    with pytest.raises(DataError, match="unknown role"):
        conversation({"messages": [{"role": "robot", "content": "hi"}]})


def test_read_conversations_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d.jsonl:3 is not valid JSON"):
        read_conversations(path)
    assert len(read_conversations(path, limit=1)) == 1
    path.write_bytes(json.dumps({"messages": CHAT}).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: byte 1 of the line is not valid UTF-8"):
        read_conversations(path)


def test_truncation_is_counted_and_packing_fills_rows(tok):
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]  # <u>a|<a>b| = 10 chars
    long = [{"role": "user", "content": "x" * 5}, {"role": "assistant", "content": "y" * 30}]  # prompt: 12 chars
    data = build_sft_data(tok, [short, short, long, short], max_seq_len=20)
    assert data.truncated == 1 and data.dropped == 0 and data.examples == 4
    # shifted lengths 9, 9 | 20 (truncated) | 9 → rows [9+9], [20], [9]
    assert [[len(x) for x, _, _ in row] for row in data.rows] == [[9, 9], [20], [9]]
    # a truncation that cuts every assistant token drops the example
    prompt_only = build_sft_data(tok, [long, short], max_seq_len=10)
    assert prompt_only.dropped == 1 and prompt_only.truncated == 1
    with pytest.raises(DataError, match="raise --max-seq-len"):
        build_sft_data(tok, [long], max_seq_len=8)


def test_collate_masks_and_segments(tok):
    data = build_sft_data(tok, [CHAT[:2], CHAT[:2]], max_seq_len=40)
    batch = collate(data.rows, data.pad_id)
    assert batch["segments"].tolist() == [[1] * 11 + [2] * 11]  # "<u>hi|<a>yo|" shifted: 11 each
    assert batch["mask"].sum() == 2 * len("yo|")
    assert torch.equal(batch["input"][0, 1:11], batch["target"][0, :10])


def test_packing_equals_separate_rows(tok):
    """Block-diagonal attention and restarted positions: packed losses equal unpacked ones."""
    model = tiny_model(tok)
    convs = [CHAT, CHAT[:2], [{"role": "user", "content": "zz"}, {"role": "assistant", "content": "qq q"}]]
    packed = build_sft_data(tok, convs, 64, pack=True)
    single = build_sft_data(tok, convs, 64, pack=False)
    assert len(packed.rows) == 1 and len(single.rows) == 3
    a = sft_loss(model, SFTBatches(packed, 4, shuffle=False).batches())
    b = sft_loss(model, SFTBatches(single, 4, shuffle=False).batches())
    assert a == pytest.approx(b, abs=1e-5)


def test_objective_ignores_everything_but_assistant_tokens(tok):
    model = tiny_model(tok)
    data = build_sft_data(tok, [CHAT], 64)
    batch = collate(data.rows, data.pad_id)
    loss, n = SFTObjective()(model, batch)
    assert n == batch["attention_mask"].sum()
    # changing a user-turn target token leaves the loss unchanged; an assistant one changes it
    user_pos = int((~batch["mask"][0]).nonzero()[0])
    asst_pos = int(batch["mask"][0].nonzero()[0])
    for pos, same in ((user_pos, True), (asst_pos, False)):
        other = {k: v.clone() for k, v in batch.items()}
        other["target"][0, pos] = (other["target"][0, pos] + 1) % tok.vocab_size
        assert (SFTObjective()(model, other)[0].item() == pytest.approx(loss.item())) is same



def test_objective_projects_only_the_scored_positions(tok):
    """``logits_at`` gives the full forward's logits at the assistant positions, so the objective
    equals cross-entropy over the whole [B, T, V] logits with the mask."""
    model = tiny_model(tok)
    data = build_sft_data(tok, [CHAT, CHAT[:2], CHAT], 40)
    batch = collate(data.rows, data.pad_id)
    full, _ = model(batch["input"], None, batch["attention_mask"], segment_ids=batch["segments"])
    picked, _ = model(batch["input"], None, batch["attention_mask"], segment_ids=batch["segments"],
                      logits_at=batch["mask"])
    assert picked.shape == (int(batch["mask"].sum()), tok.vocab_size)
    torch.testing.assert_close(picked, full[batch["mask"]], rtol=0, atol=1e-6)
    loss, _ = SFTObjective()(model, batch)
    torch.testing.assert_close(loss, token_loss(full, batch["target"], batch["mask"]), rtol=0, atol=1e-6)

def test_batches_are_a_pure_function_of_the_index(tok):
    data = build_sft_data(tok, [CHAT[:2]] * 5 + [CHAT] * 5, 20, pack=False)
    a, b = SFTBatches(data, 3, seed=1), SFTBatches(data, 3, seed=1)
    for i in (0, 7, 3):
        assert all(torch.equal(a.batch(i)[k], b.batch(i)[k]) for k in a.batch(i))


def test_segment_positions_and_mask(tok):
    model = tiny_model(tok)
    x, y = torch.randint(0, tok.vocab_size, (1, 7)), torch.randint(0, tok.vocab_size, (1, 5))
    with torch.no_grad():
        packed, _ = model(torch.cat([x, y], 1), segment_ids=torch.tensor([[1] * 7 + [2] * 5]))
        assert torch.allclose(packed[:, :7], model(x)[0], atol=1e-5)
        assert torch.allclose(packed[:, 7:], model(y)[0], atol=1e-5)
        with pytest.raises(ModelError, match="empty cache"):
            model(y, model(x)[1], segment_ids=torch.ones_like(y))


def test_prefix_and_prompt_tuning_run_on_the_transformer(tok):
    """Cached decoding equals one full pass with prefixes / soft prompts; outputs align with the ids."""
    base = tiny_model(tok)
    ids = torch.randint(0, tok.vocab_size, (2, 9))
    for apply, cfg in ((apply_prefix, PrefixConfig(n_tokens=3, hidden=8, targets=["attn"])),
                       (apply_prompt, PromptConfig(n_tokens=4, target="embed"))):
        model = apply(copy.deepcopy(base), cfg)
        with torch.no_grad():
            full, _ = model(ids)
            head, state = model(ids[:, :5])
            tail, state = model(ids[:, 5:], state)
        assert full.shape == (2, 9, tok.vocab_size)
        assert torch.allclose(torch.cat([head, tail], 1), full, atol=1e-5)
        assert not torch.allclose(full, base(ids)[0], atol=1e-4)  # the prefix / soft tokens act
    # a static cache (the engine's) makes room for the soft tokens
    state = model.initial_state(2, capacity=12)
    assert state.capacity == 16


def test_template_pieces_render_as_the_whole(tok):
    assert chat_text(tok, CHAT, add_generation_prompt=False, template=TEMPLATE) == "<u>hi|<a>yo|<u>ok?|<a>ja|"


@pytest.mark.slow
def test_real_chat_template_pieces_tokenise_like_the_whole(no_progress):
    """On SmolLM2's byte-level BPE and template, the piecewise ids equal the whole text's ids."""
    from lmlab.formats.gguf import read_gguf
    from lmlab.tokenizers import smollm2_gguf
    from lmlab.tokenizers.from_gguf import tokenizer_from_gguf

    path = smollm2_gguf()
    tok = tokenizer_from_gguf(path)
    tok.chat_template = read_gguf(path).get("tokenizer.chat_template")
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
            {"instruction": "Translate to French:", "input": "good morning\nfriend", "output": " Bonjour  l'ami !"},
            {"messages": [{"role": "system", "content": "Be brief."}, *CHAT]}]
    for row in rows:
        messages = conversation(row)
        ex = render_example(tok, messages)
        assert ex.ids == tok.encode(chat_text(tok, messages, add_generation_prompt=False))
        reply = tok.decode([i for i, a in zip(ex.ids, ex.assistant, strict=True) if a])
        assert reply.replace("<|im_end|>\n", "") == "".join(m["content"] for m in messages if m["role"] == "assistant")


def test_bf16_frozen_base_keeps_autocast_outputs_and_the_tied_embedding(tok):
    """``cast_frozen_linears`` under bf16 autocast: logits identical to autocast over the fp32 model;
    the embedding tied to the output layer, and every trainable weight, stay fp32."""
    model = tiny_model(tok)
    model.head.weight = model.embed.weight  # tied, as SmolLM2's are
    apply_lora(model, LoraConfig(r=2, targets=["q_proj", "down"]))
    batch = collate(build_sft_data(tok, [CHAT], 40).rows)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        before = SFTObjective()(model, batch)[0]
        saved = cast_frozen_linears(model, torch.bfloat16)
        after = SFTObjective()(model, batch)[0]
    assert saved > 0 and model.blocks[0].attn.k_proj.weight.dtype == torch.bfloat16
    assert model.embed.weight.dtype == torch.float32 and model.head.weight is model.embed.weight
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert after.item() == before.item()
