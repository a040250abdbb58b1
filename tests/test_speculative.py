"""Speculative decoding: the KV cache forgets rejected drafts exactly; greedy speculation equals plain
greedy token for token with every kind of drafter, in batches beside ordinary rows; speculative
sampling reproduces the target's distribution (chi-square); bad combinations are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ModelError
from lmlab.generate.engine import Engine, Request
from lmlab.generate.scheduler import Scheduler
from lmlab.generate.settings import DecodingSettings, SettingError
from lmlab.generate.speculative import (
    ModelDraft,
    PromptLookup,
    PromptNgram,
    Speculative,
    lookup_continuation,
)
from lmlab.lm import check_shared_tokenizer
from lmlab.models import load_model, save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.ngram.arpa import read_arpa, write_arpa
from lmlab.ngram.model import NgramLM
from lmlab.tokenizers import WordLevelTokenizer

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!"
WORDS = "the quick brown fox jumps over the lazy dog . the dog jumps over the fox !"


@pytest.fixture(scope="module")
def tok():
    return WordLevelTokenizer("char").train([TEXT])


def transformer(vocab: int, *, layers: int = 2, seed: int = 0, sharpen: float = 40.0, d_model: int = 32,
                special: dict | None = None) -> TransformerLM:
    torch.manual_seed(seed)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=vocab, d_model=d_model, n_layers=layers,
                                                     n_heads=4, n_kv_heads=2, context_length=128),
                       special_ids=special).eval()
    with torch.no_grad():  # sharp logits: greedy paths are not near-ties
        lm.head.weight.mul_(sharpen)
    return lm


def specials(tok) -> dict:
    return {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "unk_id": tok.unk_id}


@pytest.fixture(scope="module")
def target(tok):
    return transformer(tok.vocab_size, special=specials(tok))


def prompts(tok) -> list[list[int]]:
    texts = ["the quick brown fox jumps over the", "pack my box", "the lazy dog. the lazy", "five dozen"]
    return [[tok.bos_id, *tok.encode(t)] for t in texts]


def greedy(max_new: int = 24, **extra) -> DecodingSettings:
    return DecodingSettings(greedy=True, max_new_tokens=max_new, stop_ids=(), **extra)


# --- the cache forgets exactly ----------------------------------------------------------------------
def test_rewinding_ragged_rows_equals_feeding_them_afresh(target):
    rng = np.random.default_rng(0)
    vocab = target.vocab_size
    history = [[1, 5, 6, 7], [1, 8], [1, 9, 10, 11, 12, 13], [1, 14, 15]]
    _, state = target.prefill(history, reserve=8)
    last = [[] for _ in history]
    for _ in range(12):  # every step: each row forgets some of what it fed last, then feeds 1-4 new ids
        drops = [int(rng.integers(0, len(f) + 1)) for f in last]
        for h, d in zip(history, drops, strict=True):
            del h[len(h) - d:]
        feeds = [rng.integers(0, vocab, int(rng.integers(1, 5))).tolist() for _ in history]
        state = target.rewind(state, drops)
        width = max(map(len, feeds))
        ids = torch.zeros(len(feeds), width, dtype=torch.long)
        mask = torch.zeros(len(feeds), width, dtype=torch.long)
        for i, f in enumerate(feeds):
            ids[i, width - len(f):], mask[i, width - len(f):] = torch.tensor(f), 1
        scores, state = target.next_scores_all(ids, state, mask)
        for i, f in enumerate(feeds):
            history[i] += f
            fresh, _ = target.next_scores_all(torch.tensor([history[i]]), target.initial_state(1))
            assert (fresh[0, -len(f):] - scores[i, width - len(f):]).abs().max() < 1e-4
        assert state.real_tokens().tolist() == [len(h) for h in history]
        last = feeds
    assert state.length <= 2 * max(len(h) for h in history) + 64  # holes are compacted away


def test_generic_next_scores_all_feeds_left_padded_rows(tok):
    lm = NgramLM.fit_corpus([TEXT], tok, order=3, smoothing="wb")
    rows = [[1, 5, 6], [1, 7]]
    _, state = lm.prefill(rows)
    ids, mask = torch.tensor([[8, 9], [0, 10]]), torch.tensor([[1, 1], [0, 1]])
    scores, state = lm.next_scores_all(ids, state, mask)
    for row, fed, got in ((rows[0], [8, 9], scores[0]), (rows[1], [10], scores[1, 1:])):
        for j in range(len(fed)):
            want, _ = lm.prefill([row + fed[:j + 1]])
            assert torch.allclose(got[j].double(), want[0].double())
    with pytest.raises(ModelError, match="cannot forget"):
        lm.rewind(state, [1, 0])


def test_prompt_lookup_copies_what_followed_the_first_earlier_match():
    assert lookup_continuation([5, 6, 7, 8, 9, 5, 6], 3, max_ngram=2) == [7, 8, 9]
    assert lookup_continuation([5, 6, 7, 5, 6, 1, 6], 2, max_ngram=2) == [7, 5]  # no bigram (1, 6): unigram 6
    assert lookup_continuation([1, 2, 3, 4], 2, max_ngram=2) == []


# --- greedy speculation is plain greedy ---------------------------------------------------------------
@pytest.fixture(scope="module")
def drafters(tok, target, tmp_path_factory):
    small = transformer(tok.vocab_size, layers=1, seed=1, d_model=16, special=specials(tok))
    ngram = NgramLM.fit_corpus([TEXT, "the dog jumps over the fox"], tok, order=3, smoothing="wb")
    saved = tmp_path_factory.mktemp("ngram") / "draft"
    save_model_dir(saved, *ngram.to_state(), tokenizer=tok)
    loaded, loaded_tok = load_model(saved)
    check_shared_tokenizer("draft", loaded_tok, tok)
    return {"small model": ModelDraft(small), "the target itself": ModelDraft(target),
            "saved n-gram": ModelDraft(loaded), "n-gram on the prompt": PromptNgram(order=3),
            "prompt lookup": PromptLookup(max_ngram=3)}


@pytest.mark.parametrize("kind", ["small model", "the target itself", "saved n-gram", "n-gram on the prompt",
                                  "prompt lookup"])
def test_speculative_greedy_equals_plain_greedy(tok, target, drafters, kind):
    engine = Engine(target, decode_layout=False)
    plain = engine.generate([Request(p, settings=greedy()) for p in prompts(tok)])
    for adaptive in (False, True):
        method = Speculative(drafters[kind], draft_tokens=3, adaptive=adaptive)
        # speculative rows (two per prompt) beside an ordinary row, in one batch
        requests = [Request(p, settings=greedy(method=method, n=2)) for p in prompts(tok)]
        outs = engine.generate([*requests, Request(prompts(tok)[0], settings=greedy())])
        for i, want in enumerate(plain):
            assert outs[2 * i].ids == want.ids and outs[2 * i + 1].ids == want.ids
        assert outs[-1].ids == plain[0].ids
        assert all(0.0 <= o.info["acceptance_rate"] <= 1.0 for o in outs[:-1])
    if kind == "the target itself":  # a perfect draft: everything accepted, several tokens a step
        assert all(o.info["acceptance_rate"] == 1.0 for o in outs[:-1])
        assert all(o.info["verify_steps"] < len(o.ids) / 2 for o in outs[:-1])


def test_an_arpa_ngram_drafts_for_a_model_of_its_vocabulary(tmp_path):
    words = WordLevelTokenizer("word").train([WORDS])
    write_arpa(NgramLM.fit_corpus([WORDS], words, order=3, smoothing="wb"), words, tmp_path / "d.arpa")
    ngram, arpa_tok = read_arpa(tmp_path / "d.arpa")
    lm = transformer(arpa_tok.vocab_size, special=specials(arpa_tok))
    prompt = [arpa_tok.bos_id, *arpa_tok.encode("the dog jumps over")]
    engine = Engine(lm, decode_layout=False)
    want = engine.generate([Request(prompt, settings=greedy(16))])[0].ids
    got = engine.generate([Request(prompt, settings=greedy(16, method=Speculative(ModelDraft(ngram))))])[0]
    assert got.ids == want and got.info["draft_tokens"] > 0
    if words.vocab_size != arpa_tok.vocab_size:  # the ARPA file dropped <pad>: ids no longer line up
        with pytest.raises(ModelError, match="do not share a tokenizer"):
            check_shared_tokenizer("draft", arpa_tok, words)


def test_speculation_in_the_server_scheduler_equals_plain_greedy(tok, target, drafters):
    want = Engine(target, decode_layout=False).generate([Request(p, settings=greedy()) for p in prompts(tok)])
    method = Speculative(drafters["small model"], draft_tokens=4)
    with Scheduler(target, max_batch=8, prefill_tokens=8) as scheduler:  # chunked prefill, continuous batching
        handles = [scheduler.submit(Request(p, settings=greedy(method=method if i % 2 == 0 else None)))
                   for i, p in enumerate(prompts(tok))]
        got = [h.result(timeout=60) for h in handles]
    assert [g.ids for g in got] == [w.ids for w in want]


# --- speculative sampling is exact ------------------------------------------------------------------------
def test_speculative_sampling_reproduces_the_target_distribution():
    vocab = 6
    target = transformer(vocab, sharpen=3.0, d_model=16, special={"bos_id": 1, "eos_id": 2})
    draft = transformer(vocab, layers=1, seed=1, sharpen=3.0, d_model=16, special={"bos_id": 1, "eos_id": 2})
    prompt = [1, 3, 4, 3]

    def dist(ctx):
        return target.next_logprobs(torch.tensor([ctx]), target.initial_state(1))[0][0].double().exp()

    first = dist(prompt)
    pair = torch.zeros(vocab, vocab, dtype=torch.float64)  # exact p(2nd token, 3rd token), first marginalised
    for a in range(vocab):
        second = dist(prompt + [a])
        for b in range(vocab):
            pair[b] += first[a] * second[b] * dist(prompt + [a, b])
    samples = 1500
    engine = Engine(target, decode_layout=False)
    for drafter in (ModelDraft(draft), PromptLookup()):  # q sampled from a model; q a point mass
        settings = DecodingSettings(max_new_tokens=4, stop_ids=(), n=samples, seed=10 ** 6,
                                    method=Speculative(drafter, draft_tokens=2))
        outs = engine.generate([Request(prompt, settings=settings)])
        assert sum(o.info["draft_tokens"] for o in outs) > samples  # the drafts were really verified
        firsts = torch.bincount(torch.tensor([o.ids[0] for o in outs]), minlength=vocab).double()
        pairs = torch.zeros(vocab, vocab, dtype=torch.float64)
        for o in outs:
            pairs[o.ids[1], o.ids[2]] += 1
        assert chisquare(firsts, first * samples / first.sum()).pvalue > 1e-3
        expected = pair.flatten() * samples
        assert chisquare(pairs.flatten(), expected * samples / expected.sum()).pvalue > 1e-3


# --- refusals --------------------------------------------------------------------------------------------
def test_bad_combinations_are_refused(tok, target):
    ngram = NgramLM.fit_corpus([TEXT], tok, order=2, smoothing="wb")
    engine = Engine(ngram)
    with pytest.raises(ModelError, match="cannot forget"):
        engine.generate([Request(prompts(tok)[0], settings=greedy(method=Speculative(PromptLookup())))])
    other = transformer(tok.vocab_size + 3, layers=1)
    with pytest.raises(ModelError, match="do not share a tokenizer"):
        Engine(target).generate([Request(prompts(tok)[0], settings=greedy(method=Speculative(ModelDraft(other))))])
    with pytest.raises(SettingError, match="greedy or sampled"):
        DecodingSettings(beam_size=2, method=Speculative(PromptLookup()))


# --- constraints compose with speculation ------------------------------------------------------------------
def test_constrained_speculation_equals_constrained_greedy_and_samples_stay_valid():
    """A regex or JSON schema masks every verified position: greedy speculation under a constraint gives
    the constrained plain greedy tokens (every drafter, even one proposing tokens the mask forbids), and
    sampled speculation's outputs all match."""
    import json
    import re

    from structured_tiny import make_tiny

    from lmlab.generate.constrain import constraint_processor

    lm, chars = make_tiny()
    small, _ = make_tiny(seed=1)
    small.eos_id, small.bos_id = lm.eos_id, lm.bos_id
    pattern = r"[a-z]{2,5}-\d{1,3}( [a-z]{2,5}-\d{1,3}){0,3}"
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "tags": {"type": "array", "items": {"enum": ["ab", "ab-12"]}}},
              "required": ["name", "tags"], "additionalProperties": False}
    checks = {"regex": (pattern, lambda t: re.fullmatch(pattern, t) is not None),
              "json_schema": (schema, lambda t: set(json.loads(t)) == {"name", "tags"})}
    engine = Engine(lm, chars, decode_layout=False)
    prompt = chars.encode("ab-12 ab-12 ab-12 {\"name\": \"ab\", \"tags\": [\"ab-12\", ")
    for kind, (source, valid) in checks.items():
        constraint = constraint_processor(kind, source, chars, [chars.eos_id])
        plain = DecodingSettings(greedy=True, max_new_tokens=120, constraint=constraint)
        want = engine.generate([Request(prompt, settings=plain)])[0]
        assert want.finish_reason == "stop" and valid(want.text), (kind, want.text)
        accepted = 0
        for drafter in (ModelDraft(small), PromptLookup(max_ngram=3), PromptNgram(order=3)):
            got = engine.generate([Request(prompt, settings=plain.with_(method=Speculative(drafter, draft_tokens=4)))])
            assert got[0].ids == want.ids, (kind, drafter, got[0].text, want.text)
            accepted += got[0].info["accepted_tokens"]
        assert accepted > 0  # drafts were kept: the constrained positions were verified several at a time
        sampled = DecodingSettings(max_new_tokens=120, constraint=constraint, n=4, seed=3,
                                   method=Speculative(ModelDraft(small), draft_tokens=3))
        outs = engine.generate([Request(prompt, settings=sampled)])
        assert len({o.text for o in outs}) > 1
        for out in outs:
            assert out.finish_reason == "stop" and valid(out.text), (kind, out.text)
