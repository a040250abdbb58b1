"""The inference engine: static cache == concatenating cache, batched == one by one, stops,
streaming, context overflow, protocol models, chat templates and the generate CLI."""

from __future__ import annotations

import json

import pytest
import torch
from decoding_reference import reference_continuation
from tiny_lm import TEXT, tiny_transformer
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.generate import TopK, sample, standard_chain
from lmlab.generate.chat_template import chat_prompt, render_chat
from lmlab.generate.engine import Engine, Request
from lmlab.generate.output import StopStrings, TextRow
from lmlab.tokenizers import WordLevelTokenizer


@pytest.fixture(scope="module")
def tok():
    return WordLevelTokenizer("char").train([TEXT])


@pytest.mark.parametrize("preset", ["llama", "gpt2"])
def test_static_cache_equals_concatenating_cache(tok, preset):
    lm = tiny_transformer(tok, preset)
    ids = torch.randint(0, tok.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    for attention_mask in (None, mask):
        full, _ = lm(ids, attention_mask=attention_mask)
        state = lm.initial_state(2, capacity=20)
        logits, state = lm(ids[:, :7], state, attention_mask=None if attention_mask is None else mask[:, :7])
        steps = [logits]
        for t in range(7, 12):
            logits, state = lm(ids[:, t:t + 1], state)
            steps.append(logits)
        assert state.length == 12 and state.keys[0].shape[2] == 20
        assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


def test_static_cache_overflow_is_an_error(tok):
    lm = tiny_transformer(tok)
    state = lm.initial_state(1, capacity=4)
    with pytest.raises(LmlabError, match="static cache"):
        lm(torch.zeros(1, 5, dtype=torch.long), state)


def test_greedy_engine_equals_an_uncached_reference(tok):
    lm = tiny_transformer(tok)
    prompt = tok.encode("the quick")
    out = Engine(lm, tok, greedy=True).generate([Request(prompt, max_new_tokens=12, stop_ids=[])])[0]
    ids, logprobs = reference_continuation(lm, prompt, 12)
    assert out.ids == ids
    assert out.logprobs == pytest.approx(logprobs, abs=1e-5)
    assert out.text == tok.decode(out.ids)


@pytest.mark.parametrize("preset", ["llama", "gpt2"])
def test_decode_layout_restrides_in_place_and_keeps_outputs(tok, preset):
    from lmlab.models.layout import column_major_linears, decode_layout

    lm = tiny_transformer(tok, preset)
    ids = torch.randint(0, tok.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    before, _ = lm(ids)
    params = dict(lm.named_parameters())
    values = {name: p.detach().clone() for name, p in params.items()}
    prompt = tok.encode("the quick")
    ref = sample(lm, prompt, greedy=True, max_new_tokens=10, stop_ids=[])[0]
    Engine(lm, tok, greedy=True)
    linears = [m.weight for m in lm.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(w.stride()[0] == 1 for w in linears)  # column-major
    attn = lm.blocks[0].attn
    assert attn.packed is not None and attn.q_proj.weight.untyped_storage().data_ptr() == \
        attn.v_proj.weight.untyped_storage().data_ptr()  # q/k/v: blocks of one tensor
    assert (lm.blocks[0].mlp.packed is not None) == (preset == "llama")  # SwiGLU's gate/up
    assert dict(lm.named_parameters()) == params  # the same Parameter objects: optimizers and ties still hold
    assert all(torch.equal(params[name], v) for name, v in values.items())
    if lm.config.tie_embeddings:
        assert lm.head.weight is lm.embed.weight
    with torch.no_grad():  # the packed path
        after, _ = lm(ids)
    assert (after - before).abs().max() < 1e-5
    assert sample(lm, prompt, greedy=True, max_new_tokens=10, stop_ids=[])[0].ids == ref.ids
    logits, _ = lm(ids)  # recording gradients: the layers' own path, so every weight gets its gradient
    logits.sum().backward()
    assert all(p.grad is not None for p in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight))
    assert column_major_linears(lm) == 0 and decode_layout(lm) == len(lm.blocks) * (2 if preset == "llama" else 1)
    attn.q_proj.weight = torch.nn.Parameter(torch.zeros_like(attn.q_proj.weight))  # replaced: packing is stale
    with torch.no_grad():
        stale, _ = lm(ids)
        attn.packed = None
        fresh, _ = lm(ids)
    assert torch.equal(stale, fresh)
    assert column_major_linears(tiny_transformer(tok, preset).to(torch.bfloat16)) == 0  # float32 only
    kept = tiny_transformer(tok, preset)
    Engine(kept, tok, decode_layout=False)
    assert all(m.weight.is_contiguous() for m in kept.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("greedy", [True, False])
def test_batched_with_padding_equals_one_by_one(tok, greedy):
    lm = tiny_transformer(tok)
    chain = [] if greedy else standard_chain(temperature=0.9, top_k=8, repetition_penalty=1.3)
    engine = Engine(lm, tok, processors=chain, greedy=greedy)
    requests = [Request(tok.encode(p), max_new_tokens=n, stop_ids=[], seed=s)
                for p, n, s in (("the quick brown", 10, 1), ("a", 6, 2), ("pack my box wi", 8, 3))]
    batched = engine.generate(requests)
    for r, b in zip(requests, batched, strict=True):
        alone = engine.generate([r])[0]
        assert b.ids == alone.ids and len(b.ids) == r.max_new_tokens
        assert b.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_seeded_sampling_matches_an_uncached_reference(tok):
    lm = tiny_transformer(tok)
    prompt = tok.encode("the lazy")
    chain = [TopK(5)]
    ours = Engine(lm, tok, processors=chain).generate([Request(prompt, max_new_tokens=10, stop_ids=[], seed=7)])[0]
    ids, _ = reference_continuation(lm, prompt, 10, processors=chain, greedy=False, seed=7)
    assert ours.ids == ids
    again = sample(lm, prompt, processors=chain, max_new_tokens=10, seed=7, stop_ids=[])[0]
    assert again.ids == ids


def test_top_k_one_equals_greedy(tok):
    lm = tiny_transformer(tok)
    prompt = tok.encode("five dozen")
    a = Engine(lm, tok, processors=[TopK(1)]).generate([Request(prompt, max_new_tokens=8, stop_ids=[], seed=3)])[0]
    b = Engine(lm, tok, greedy=True).generate([Request(prompt, max_new_tokens=8, stop_ids=[])])[0]
    assert a.ids == b.ids


def test_stop_ids_and_stop_strings(tok):
    lm = tiny_transformer(tok)
    prompt = tok.encode("the quick")
    free = Engine(lm, tok, greedy=True).generate([Request(prompt, max_new_tokens=16, stop_ids=[])])[0]
    first = free.ids[3]
    by_id = Engine(lm, tok, greedy=True).generate([Request(prompt, max_new_tokens=16, stop_ids=[first])])[0]
    assert by_id.ids == free.ids[:free.ids.index(first)] and by_id.finish_reason == "stop"
    stop = free.text[4:6]
    by_text = Engine(lm, tok, greedy=True).generate([Request(prompt, max_new_tokens=16, stop_ids=[],
                                                             stop=[stop])])[0]
    assert by_text.text == free.text[:free.text.find(stop)] and by_text.finish_reason == "stop"


def test_stream_pieces_join_to_the_text_and_never_show_a_stop(tok):
    lm = tiny_transformer(tok)
    prompt = tok.encode("over the")
    engine = Engine(lm, tok, greedy=True)
    free = engine.generate([Request(prompt, max_new_tokens=20, stop_ids=[])])[0]
    stop = free.text[8:11]
    run = engine.stream(Request(prompt, max_new_tokens=20, stop_ids=[], stop=[stop]))
    pieces = []
    while True:
        try:
            pieces.append(next(run))
        except StopIteration as end:
            completion = end.value
            break
    assert "".join(pieces) == completion.text == free.text[:free.text.find(stop)]
    assert all(stop not in "".join(pieces[:i + 1]) for i in range(len(pieces)))


def test_stream_pieces_are_whole_characters():
    from lmlab.tokenizers import load

    tok = load("smollm2-135m-instruct")
    text = "日本語 — naïve ✓ 🙂 done"
    ids = tok.encode(text)
    row = TextRow(1, set(), StopStrings(()), len(ids), tok.stream_decoder(skip_special_tokens=True))
    pieces = [row.add(i, 0.0) for i in ids]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert len(ids) > len([p for p in pieces if p])  # some tokens were partial characters, held back


def test_context_overflow_error_or_truncation(tok):
    lm = tiny_transformer(tok, context_length=16)
    prompt = tok.encode("the quick brown fox")
    with pytest.raises(LmlabError, match="context of 16"):
        Engine(lm, tok, greedy=True).generate([Request(prompt, max_new_tokens=4)])
    out = Engine(lm, tok, greedy=True, on_overflow="truncate").generate([Request(prompt, max_new_tokens=4,
                                                                                 stop_ids=[])])[0]
    assert out.prompt_tokens == 12 and len(out.ids) == 4
    with pytest.raises(LmlabError, match="16 new tokens leave no room") as caught:  # truncating cannot help
        Engine(lm, tok, greedy=True, on_overflow="truncate").generate([Request(prompt, max_new_tokens=16)])
    assert "--on-overflow" not in caught.value.fix and "below 16" in caught.value.fix


def test_any_protocol_model_runs_through_the_engine(tok):
    from lmlab.models.recurrent import RecurrentLM

    torch.manual_seed(0)
    lm = RecurrentLM(tok.vocab_size, d_embed=16, d_hidden=16).eval()
    requests = [Request(tok.encode("the"), max_new_tokens=5, stop_ids=[], seed=1),
                Request(tok.encode("a lazy"), max_new_tokens=3, stop_ids=[], seed=2)]
    outs = Engine(lm, tok, greedy=True).generate(requests)
    assert [len(o.ids) for o in outs] == [5, 3]
    assert outs[0].ids == reference_continuation(lm, requests[0].prompt, 5)[0]
    assert outs[1].ids == reference_continuation(lm, requests[1].prompt, 3)[0]


def test_stats_are_reported(tok):
    out = Engine(tiny_transformer(tok), tok, greedy=True).generate([Request(tok.encode("the"), max_new_tokens=5, stop_ids=[])])[0]
    s = out.stats.to_dict()
    assert s["prompt_tokens"] == 3 and s["generated_tokens"] == 5
    assert s["prefill_tokens_per_s"] > 0 and s["decode_tokens_per_s"] > 0 and s["time_to_first_token_s"] > 0
    assert s["peak_memory_mb"] > 0


TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]


def test_render_chat_by_hand():
    assert render_chat(TEMPLATE, MESSAGES[1:2]) == \
        "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert render_chat(TEMPLATE, MESSAGES, add_generation_prompt=False).count("<|im_start|>") == 4
    with pytest.raises(LmlabError, match="role"):
        render_chat(TEMPLATE, [{"role": "robot", "content": "x"}])
    with pytest.raises(LmlabError, match="refused"):
        render_chat("{{ raise_exception('no system role') }}", MESSAGES)


def test_chat_prompt_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmlab.models.gguf_import import read_gguf
    from lmlab.tokenizers import load, smollm2_gguf

    tok = load("smollm2-135m-instruct")
    tok.chat_template = read_gguf(smollm2_gguf()).get("tokenizer.chat_template")
    tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    hf.chat_template = tok.chat_template
    for messages in (MESSAGES[1:2], MESSAGES):
        theirs = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        theirs = theirs["input_ids"] if isinstance(theirs, dict) or hasattr(theirs, "keys") else theirs
        assert chat_prompt(tok, messages) == list(theirs)


def test_bad_decoding_settings_are_one_clear_error(capsys, tmp_path):
    from lmlab.cli import main
    from lmlab.models import save_model_dir

    t = WordLevelTokenizer("char").train([TEXT])
    save_model_dir(tmp_path / "m", *tiny_transformer(t).to_state(), tokenizer=t)
    for flag, value, match in (("--top-p", "1.5", "--top-p = 1.5"), ("--top-p", "0", "--top-p = 0"),
                               ("--temperature", "-1", "--temperature = -1")):
        code = main(["generate", "--model", str(tmp_path / "m"), "--prompt", "the", flag, value])
        assert code != 0 and match in capsys.readouterr().err


def test_generate_cli_json_has_timing(capsys, tmp_path):
    from lmlab.cli import main
    from lmlab.models import save_model_dir

    t = WordLevelTokenizer("char").train([TEXT])
    save_model_dir(tmp_path / "m", *tiny_transformer(t).to_state(), tokenizer=t)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the quick\na lazy dog\n")
    assert main(["generate", "--model", str(tmp_path / "m"), "--prompts-file", str(prompts), "--greedy",
                 "--max-new-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"text", "tokens", "logprobs", "prefill_tokens_per_s", "decode_tokens_per_s",
            "time_to_first_token_s"} <= set(out)
    assert len(out["samples"]) == 2 and all(len(s["tokens"]) <= 5 for s in out["samples"])


def test_chat_cli_piped_keeps_history_and_commands(capsys, monkeypatch, tmp_path):
    import io

    from lmlab.cli import main

    t = WordLevelTokenizer("char").train([TEXT + "<>|_/"])
    t.chat_template = "{% for m in messages %}<{{ m['role'] }}|{{ m['content'] }}>{% endfor %}" \
        "{% if add_generation_prompt %}<assistant|{% endif %}"
    lm = tiny_transformer(t)
    monkeypatch.setattr("lmlab.models.load_model", lambda *a, **k: (lm, t))
    monkeypatch.setattr("sys.stdin", io.StringIO("the fox\n/settings\n/system be lazy\nover the dog\n/reset\nhi\n"))
    assert main(["chat", "--model", str(tmp_path), "--greedy", "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["system"] == "be lazy" and [turn["user"] for turn in out["turns"]] == ["the fox", "over the dog", "hi"]
    assert all(turn["tokens"] <= 4 and "decode_tokens_per_s" in turn for turn in out["turns"])
