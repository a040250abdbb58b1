"""The one decoding loop: the KV cache's row operations, decoding settings, batched and chunked
prefill, one shared prefill for n continuations, beams beside samples in one batch, and every
protocol model (n-gram, LSTM, transformer) through the same loop."""

from __future__ import annotations

import pytest
import torch
from decoding_reference import reference_continuation
from tiny_lm import TEXT, tiny_transformer
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError, LmlabError
from lmlab.generate import beam_search
from lmlab.generate.engine import Engine, Request
from lmlab.generate.loop import DecodeLoop
from lmlab.generate.processors import NoRepeatNgram, RepetitionPenalty
from lmlab.generate.settings import DecodingSettings, SettingError
from lmlab.kvcache import KVCache
from lmlab.tokenizers import WordLevelTokenizer


@pytest.fixture(scope="module")
def tok():
    return WordLevelTokenizer("char").train([TEXT])


# --- the cache ---------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["llama", "gpt2"])
def test_concatenated_and_selected_caches_continue_exactly(tok, preset):
    lm = tiny_transformer(tok, preset, context_length=128)
    prompts = [tok.encode("the quick brown"), tok.encode("a"), tok.encode("pack my")]
    alone = []
    for p in prompts:  # each prompt alone: its next three tokens' logits, fed greedily
        logits, state = lm.next_scores(torch.tensor([p]), lm.initial_state(1))
        rows = [logits]
        for _ in range(3):
            logits, state = lm.next_scores(logits.argmax(-1, keepdim=True), state)
            rows.append(logits)
        alone.append(torch.cat(rows))
    states = [lm.next_scores(torch.tensor([p]), lm.initial_state(1))[1] for p in prompts]
    batch = KVCache.concat(states)  # right-aligned, left-padded
    assert batch.batch_size == 3 and batch.length == len(prompts[0])
    assert not batch.mask[1, :len(prompts[0]) - 1].any() and batch.mask[1, len(prompts[0]) - 1]
    first = torch.stack([a[0] for a in alone])
    state, logits, got = batch, first, [first]
    for _ in range(3):
        logits, state = lm.next_scores(logits.argmax(-1, keepdim=True), state)
        got.append(logits)
    got = torch.stack(got, 1)
    assert (got - torch.stack(alone)).abs().max() < 1e-4
    kept = state.select(torch.tensor([1]))  # the short row alone: the padding columns are dropped
    assert kept.length == 4 and kept.mask[:, :kept.length].all()
    next_alone, _ = lm.next_scores(got[1, -1].argmax().view(1, 1), kept)
    next_batch, _ = lm.next_scores(got[:, -1].argmax(-1, keepdim=True), state)
    assert (next_alone[0] - next_batch[1]).abs().max() < 1e-4
    assert kept.bytes_held() < state.bytes_held()


def test_evicting_positions_equals_masking_them(tok):
    lm = tiny_transformer(tok, context_length=128)
    ids = torch.tensor([tok.encode("the quick brown fox")])
    nxt = torch.tensor([[tok.encode("j")[0]]])
    _, evicted = lm.next_scores(ids, lm.initial_state(1, capacity=32, growable=True))
    keep = torch.ones(1, ids.shape[1], dtype=torch.bool)
    keep[0, 3:7] = False  # forget four positions in the middle
    before = evicted.bytes_held()
    evicted.evict(keep)
    assert evicted.length == ids.shape[1] - 4 and evicted.bytes_held() < before
    _, masked = lm.next_scores(ids, lm.initial_state(1, capacity=32))
    masked.mask = torch.ones(1, 32, dtype=torch.bool)
    masked.mask[0, 3:7] = False  # the same positions hidden from attention, position ids unchanged
    masked.next_position = torch.tensor([ids.shape[1]])
    a, _ = lm.next_scores(nxt, evicted)
    b, _ = lm.next_scores(nxt, masked)
    assert (a - b).abs().max() < 1e-5
    with pytest.raises(ConfigError, match="keep"):
        evicted.evict(torch.ones(2, 2, dtype=torch.bool))


# --- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("top_p", 1.5), ("top_p", 0.0), ("temperature", -1.0), ("top_k", 0), ("min_p", 2.0), ("typical_p", 0.0),
    ("epsilon", 1.0), ("eta", 0.0), ("repetition_penalty", 0.0), ("frequency_penalty", 3.0),
    ("presence_penalty", -2.5), ("no_repeat_ngram_size", -1), ("n", 0), ("best_of", 0), ("beam_size", 0),
    ("diverse_groups", 0), ("max_new_tokens", -1), ("top_logprobs", -1), ("seed", 1.5), ("stop", ("",)),
    ("stop_ids", (-1,)), ("logit_bias", {1: float("nan")}), ("greedy", "yes"),
])
def test_every_bad_setting_is_one_error_naming_it(field, value):
    with pytest.raises(SettingError) as err:
        DecodingSettings(**{field: value})
    assert err.value.setting == field and field in str(err.value)


def test_strategies_and_their_combinations():
    assert DecodingSettings().strategy == "sample" and DecodingSettings(temperature=0).strategy == "greedy"
    assert DecodingSettings(beam_size=4, n=2).rows == 4 and DecodingSettings(best_of=5, n=2).rows == 5
    assert DecodingSettings(diverse_groups=3).beams == 6
    for bad, setting in (({"beam_size": 2, "n": 3}, "n"), ({"best_of": 2, "n": 3}, "best_of"),
                         ({"beam_size": 4, "best_of": 4}, "best_of"), ({"greedy": True, "beam_size": 2}, "greedy"),
                         ({"beam_size": 5, "diverse_groups": 2}, "diverse_groups"),
                         ({"stochastic_beam": True, "diverse_groups": 2}, "diverse_groups")):
        with pytest.raises(SettingError) as err:
            DecodingSettings(**bad)
        assert err.value.setting == setting
    with pytest.raises(SettingError, match="stop_ids"):
        DecodingSettings(stop_ids=(500,)).check_for(100)
    with pytest.raises(ConfigError, match="either"):
        Request([1], max_new_tokens=3, settings=DecodingSettings())


# --- the loop ------------------------------------------------------------------------------------
def test_waiting_prompts_are_prefilled_in_one_forward_and_n_rows_share_it(tok, monkeypatch):
    lm = tiny_transformer(tok, context_length=128)
    calls = []
    prefill = lm.prefill
    monkeypatch.setattr(lm, "prefill", lambda prompts, reserve=0: calls.append(len(prompts)) or prefill(prompts, reserve))
    prompts = [tok.encode("the quick"), tok.encode("a lazy dog"), tok.encode("x")]
    settings = DecodingSettings(n=3, seed=1, max_new_tokens=6, stop_ids=())
    engine = Engine(lm, tok, decode_layout=False)
    loop = engine.loop()
    outs = []
    for p in prompts:
        loop.add(Request(p, settings=settings), lambda e: outs.append(e) if e.done else None)
    while loop.busy:
        loop.turn()
    assert calls == [3]  # three prompts, one forward pass
    assert loop.counters["prefill_tokens"] == sum(len(p) for p in prompts)  # not 3 × each: n rows share one
    assert [len(e.completions) for e in outs] == [3, 3, 3]
    for p, event in zip(prompts, outs, strict=True):  # row j samples with seed + j, as if alone
        for j, c in enumerate(event.completions):
            ids, _ = reference_continuation(lm, p, 6, greedy=False, seed=1 + j)
            assert c.ids == ids


def test_chunked_prefill_equals_one_forward(tok):
    lm = tiny_transformer(tok, context_length=128)
    long, short = tok.encode("pack my box with five dozen liquor jugs"), tok.encode("the")
    greedy = DecodingSettings(greedy=True, max_new_tokens=8, stop_ids=())
    expected = [reference_continuation(lm, p, 8)[0] for p in (long, short)]
    loop = DecodeLoop(lm, tok, prefill_tokens=5)
    done = {}
    for i, p in enumerate((long, short)):
        loop.add(Request(p, settings=greedy), lambda e, i=i: done.__setitem__(i, e) if e.done else None)
    turns = 0
    while loop.busy:
        loop.turn()
        turns += 1
    assert [done[i].completions[0].ids for i in (0, 1)] == expected
    assert turns >= len(long) // 5 + 8  # the long prompt took several turns


def test_the_batch_holds_one_row_of_scores_and_state_per_running_row(tok):
    """Rows that join the batch add their scores once (a merge once added them twice, so every step
    re-selected the state and the cache grew)."""
    lm = tiny_transformer(tok, context_length=128)
    loop = DecodeLoop(lm, tok)
    settings = DecodingSettings(greedy=True, max_new_tokens=6, stop_ids=())
    selects = []
    select = lm.select_state
    lm.select_state = lambda state, index: selects.append(index.tolist()) or select(state, index)
    for text in ("the cat", "a dog sat"):
        loop.add(Request(tok.encode(text), settings=settings), lambda e: None)
    while loop.busy:
        loop.turn()
        if loop.running:
            assert loop.scores.shape[0] == loop.running_rows == loop.state.batch_size
    assert selects == []  # nobody finished early, nobody was reordered: no row copying at all


def test_beams_and_samples_share_one_batch(tok):
    lm = tiny_transformer(tok, context_length=128)
    beam = DecodingSettings(beam_size=3, n=2, max_new_tokens=6, stop_ids=())
    sample = DecodingSettings(top_k=5, seed=4, max_new_tokens=9, stop_ids=())
    best = DecodingSettings(best_of=4, n=2, seed=2, max_new_tokens=5, stop_ids=())
    prompts = [tok.encode("the quick"), tok.encode("over"), tok.encode("five")]
    engine = Engine(lm, tok, decode_layout=False)
    together = engine.generate([Request(p, settings=s) for p, s in zip(prompts, (beam, sample, best), strict=True)])
    alone = [c for p, s in zip(prompts, (beam, sample, best), strict=True)
             for c in engine.generate([Request(p, settings=s)])]
    assert [c.ids for c in together] == [c.ids for c in alone] and len(together) == 5
    by_function = beam_search(lm, prompts[0], beam_size=3, max_new_tokens=6, stop_ids=[], num_return=2)
    assert [c.ids for c in together[:2]] == [c.ids for c in by_function]
    assert together[0].score >= together[1].score
    assert together[3].score >= together[4].score  # best-of keeps the highest mean log-prob first
    assert together[2].ids == reference_continuation(lm, prompts[1], 9, greedy=False, seed=4,
                                                     processors=sample.chain())[0]


def test_repetition_penalty_and_ngram_blocking_act_on_raw_logits(tok):
    lm = tiny_transformer(tok, context_length=128)
    prompt = tok.encode("the quick brown fox jumps over the lazy dog")
    chain = [RepetitionPenalty(1.3), NoRepeatNgram(3)]
    out = Engine(lm, tok, processors=chain, greedy=True).generate([Request(prompt, max_new_tokens=20, stop_ids=[])])[0]
    assert out.ids == reference_continuation(lm, prompt, 20, processors=chain)[0]
    raw = torch.tensor([[2.0, -1.0, 0.5]])
    penalised = RepetitionPenalty(2.0)(raw, torch.tensor([[0, 1]]), 2)
    assert penalised.tolist() == [[1.0, -2.0, 0.5]]  # positive divided, negative multiplied (CTRL)


def test_zero_new_tokens_only_prefills(tok):
    lm = tiny_transformer(tok, context_length=128)
    out = Engine(lm, tok).generate([Request(tok.encode("the"), settings=DecodingSettings(max_new_tokens=0, n=2))])
    assert [c.ids for c in out] == [[], []]


def test_every_protocol_model_runs_through_the_loop(tok):
    from lmlab.models.recurrent import RecurrentLM
    from lmlab.ngram import NgramLM

    torch.manual_seed(0)
    lstm = RecurrentLM(tok.vocab_size, d_embed=16, d_hidden=16).eval()
    corpus = [TEXT, "the lazy dog jumps over the quick fox ."]
    words = WordLevelTokenizer("word").train(corpus)
    ngram = NgramLM.fit_corpus(corpus, words, order=3, smoothing="kn")
    for lm, t in ((lstm, tok), (ngram, words)):
        prompts = [t.encode("the quick"), t.encode("the"), t.encode("lazy dog jumps")]
        settings = DecodingSettings(greedy=True, max_new_tokens=5, stop_ids=())
        batched = Engine(lm, t).generate([Request(p, settings=settings) for p in prompts])
        assert [c.ids for c in batched] == [reference_continuation(lm, p, 5)[0] for p in prompts]
        beams = Engine(lm, t).generate([Request(prompts[0], settings=DecodingSettings(beam_size=2, n=2,
                                                                                      max_new_tokens=3, stop_ids=()))])
        assert len(beams) == 2 and beams[0].score >= beams[1].score


def test_a_failing_request_leaves_the_batch_alone(tok):
    lm = tiny_transformer(tok, context_length=128)
    everything = tuple(range(tok.vocab_size))
    loop = DecodeLoop(lm, tok)
    events = {}
    loop.add(Request(tok.encode("the"), settings=DecodingSettings(banned_ids=everything, max_new_tokens=4)),
             lambda e: events.__setitem__("bad", e) if e.done else None)
    loop.add(Request(tok.encode("a"), settings=DecodingSettings(greedy=True, max_new_tokens=4, stop_ids=())),
             lambda e: events.__setitem__("good", e) if e.done else None)
    while loop.busy:
        loop.turn()
    assert isinstance(events["bad"].error, LmlabError) and "removed every token" in str(events["bad"].error)
    assert len(events["good"].completions[0].ids) == 4
