"""The continuous-batching scheduler: rows that join and leave a running batch compute exactly what
they would alone; per-request sampling, stops, cancellation, timeouts, back-pressure, isolation."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from tiny_lm import TEXT, tiny_transformer
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import LmlabError
from lmlab.generate import standard_chain
from lmlab.generate.engine import Engine, Request
from lmlab.generate.scheduler import QueueFull, RequestTimeout, Scheduler
from lmlab.generate.settings import DecodingSettings
from lmlab.tokenizers import WordLevelTokenizer

PROMPTS = ["the quick", "a", "pack my box with", "lazy dog. ", "jugs", "five dozen liquor", "x",
           "brown fox jumps over"]


@pytest.fixture(scope="module")
def tok():
    return WordLevelTokenizer("char").train([TEXT])


def slowed(lm, seconds=0.01):
    """The same model, each forward call delayed (so a test can act while requests are running)."""
    forward = lm.forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    lm.forward = slow
    return lm


def requests(tok, n=8):
    return [Request(tok.encode(p), max_new_tokens=5 + 3 * i, stop_ids=[]) for i, p in enumerate(PROMPTS[:n])]


GREEDY = DecodingSettings(greedy=True)


def settings(r, **kw):
    """A request's limits as full settings (with ``kw`` on top)."""
    return Request(r.prompt, settings=DecodingSettings(max_new_tokens=r.max_new_tokens, stop=tuple(r.stop),
                                                       stop_ids=r.stop_ids, seed=r.seed, **kw))


def assert_batched_equals_alone(lm, tok, reqs):
    """Greedy continuations submitted all at once equal the engine's, one request at a time."""
    alone = [Engine(lm, tok, greedy=True).generate([r])[0].ids for r in reqs]
    with Scheduler(lm, tok, settings=GREEDY) as scheduler:
        handles = [scheduler.submit(r) for r in reqs]
        assert [h.result(timeout=60).ids for h in handles] == alone


@pytest.mark.parametrize("preset", ["llama", "gpt2"])  # rotary and learned positions
def test_rows_joining_and_leaving_compute_what_they_would_alone(tok, preset):
    lm = tiny_transformer(tok, preset)
    reqs = requests(tok)
    alone = [Engine(lm, tok, greedy=True).generate([r])[0] for r in reqs]
    with Scheduler(lm, tok, max_batch=4, settings=GREEDY) as scheduler:
        handles = []
        for r in reqs:  # staggered: rows join a batch already decoding, and leave at different steps
            handles.append(scheduler.submit(r))
            time.sleep(0.003)
        outs = [h.result(timeout=60) for h in handles]
        load = scheduler.load()
    assert [o.ids for o in outs] == [a.ids for a in alone]
    assert [o.text for o in outs] == [a.text for a in alone]
    assert [len(o.ids) for o in outs] == [r.max_new_tokens for r in reqs]
    assert 1 < load["peak_batch"] <= 4 and load["completed"] == 8 and load["running"] == 0
    assert scheduler.loop.state is None  # every row left: the KV cache is freed


def test_long_runs_repack_the_cache_and_stay_exact(tok):
    lm = tiny_transformer(tok, context_length=256)
    reqs = [Request(tok.encode(p), max_new_tokens=150 - 20 * i, stop_ids=[]) for i, p in enumerate(PROMPTS[:4])]
    assert_batched_equals_alone(lm, tok, reqs)


def test_seeded_sampling_with_processors_matches_the_engine(tok):
    lm = tiny_transformer(tok)
    chain = standard_chain(temperature=0.8, top_k=5, frequency_penalty=0.5)
    reqs = [Request(tok.encode(p), max_new_tokens=12, seed=7 + i, stop_ids=[]) for i, p in enumerate(PROMPTS[:3])]
    expected = [Engine(lm, tok, processors=chain).generate([r])[0].ids for r in reqs]
    with Scheduler(lm, tok) as scheduler:
        handles = [scheduler.submit(settings(r, processors=tuple(chain))) for r in reqs]
        greedy = scheduler.submit(settings(Request(tok.encode("the"), max_new_tokens=12, stop_ids=[]), greedy=True))
        assert [h.result(timeout=60).ids for h in handles] == expected
        assert greedy.result(timeout=60).ids == Engine(lm, tok, greedy=True).generate(
            [Request(tok.encode("the"), max_new_tokens=12, stop_ids=[])])[0].ids


def test_events_stream_the_text_and_stops_end_a_row(tok):
    lm = tiny_transformer(tok)
    with Scheduler(lm, tok, settings=GREEDY) as scheduler:
        free = scheduler.generate(Request(tok.encode("the"), max_new_tokens=20, stop_ids=[]))
        stop = free.text[3:5]
        handle = scheduler.submit(settings(Request(tok.encode("the"), max_new_tokens=20, stop=[stop], stop_ids=[]),
                                           greedy=True, top_logprobs=3))
        events = list(handle)
    assert events[-1].done and events[-1].completions[0].finish_reason == "stop"
    text = "".join(e.text for e in events)
    assert text == free.text[:free.text.find(stop)] == events[-1].completions[0].text
    tokens = [e for e in events if e.token is not None]
    assert all(len(e.top) == 3 and e.top[0][1] >= e.logprob - 1e-6 for e in tokens)


def test_cancel_frees_the_row_at_once(tok):
    lm = slowed(tiny_transformer(tok))
    with Scheduler(lm, tok, settings=GREEDY) as scheduler:
        long = scheduler.submit(Request(tok.encode("the"), max_new_tokens=60, stop_ids=[]))
        short = scheduler.submit(Request(tok.encode("a"), max_new_tokens=30, stop_ids=[]))
        time.sleep(0.05)
        long.cancel()
        out = long.result(timeout=10)
        assert out.finish_reason == "cancelled" and len(out.ids) < 60
        assert len(short.result(timeout=30).ids) == 30
        assert scheduler.load()["cancelled"] == 1


def test_queue_full_timeout_and_bad_requests(tok):
    lm = slowed(tiny_transformer(tok))
    with Scheduler(lm, tok, max_batch=1, max_queue=1, settings=GREEDY) as scheduler:
        first = scheduler.submit(Request(tok.encode("the"), max_new_tokens=40, stop_ids=[]))
        time.sleep(0.05)
        second = scheduler.submit(Request(tok.encode("a"), max_new_tokens=3, stop_ids=[]))
        with pytest.raises(QueueFull):
            scheduler.submit(Request(tok.encode("a"), max_new_tokens=3, stop_ids=[]))
        with pytest.raises(LmlabError, match="context"):
            scheduler.submit(Request(tok.encode("a"), max_new_tokens=500))
        with pytest.raises(LmlabError, match="stop"):
            scheduler.submit(Request(tok.encode("a"), max_new_tokens=3, stop=[""]))
        assert len(first.result(timeout=30).ids) == 40 and len(second.result(timeout=30).ids) == 3
        late = scheduler.submit(Request(tok.encode("a"), max_new_tokens=50, stop_ids=[]), timeout_s=0.1)
        with pytest.raises(RequestTimeout):
            late.result(timeout=30)


def test_a_failing_row_leaves_the_others_alone(tok):
    lm = tiny_transformer(tok)
    banned = standard_chain(banned_ids=list(range(tok.vocab_size)))  # removes every token: that row fails
    with Scheduler(lm, tok) as scheduler:
        good = scheduler.submit(settings(Request(tok.encode("the"), max_new_tokens=10, stop_ids=[]), greedy=True))
        bad = scheduler.submit(settings(Request(tok.encode("the"), max_new_tokens=10, stop_ids=[]),
                                        processors=tuple(banned)))
        with pytest.raises(LmlabError, match="removed every token"):
            bad.result(timeout=30)
        assert len(good.result(timeout=30).ids) == 10


def test_any_protocol_model_is_scheduled_row_by_row(tok):
    from lmlab.models.recurrent import RecurrentLM

    torch.manual_seed(0)
    lm = RecurrentLM(tok.vocab_size, d_embed=16, d_hidden=16).eval()
    reqs = requests(tok, 4)
    assert_batched_equals_alone(lm, tok, reqs)


def test_many_threads_submit_at_once(tok):
    lm = tiny_transformer(tok)
    reqs = requests(tok) * 3
    alone = {tuple(r.prompt): Engine(lm, tok, greedy=True).generate([r])[0].ids for r in reqs}
    results = []
    with Scheduler(lm, tok, max_batch=8, settings=GREEDY) as scheduler:
        def client(r):
            results.append((tuple(r.prompt), scheduler.generate(r).ids))

        threads = [threading.Thread(target=client, args=(r,)) for r in reqs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == len(reqs) and all(ids == alone[p] for p, ids in results)
