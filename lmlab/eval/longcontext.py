"""Long-context evaluation: needle in a haystack, a small RULER-style suite, and perplexity of a long stream.

Everything is generated locally from a filler corpus (any list of texts; the CLI defaults to the
embedded ``pydoc_data`` corpus) with a seed, and run through the decoding loop with any KV-cache
settings (``lmlab.kvcache``), so each figure can be compared between cache policies and budgets.

* ``needle_grid`` — needle in a haystack (Kamradt, 2023; the form of Liu et al., 2024's retrieval
  probe): a sentence with a random number hidden at a depth of a filler text of a given length,
  then the question; a cell's accuracy is the share of trials whose greedy answer contains it.
* ``ruler_suite`` — three of RULER's synthetic tasks (Hsieh et al., 2024), sized to the context:
  multi-key retrieval (several needles, one asked for), variable tracking (follow a chain of
  assignments, name every variable holding the value) and common-word extraction (name the most
  frequent words of a long list). Scores are RULER's string-match recall of the expected answers.
* ``stream_perplexity`` — a long token stream fed in chunks through the cache, every token scored,
  perplexity per segment: StreamingLLM stays flat past the context, a window without sinks does not,
  and the full cache stops at the context limit (Xiao et al., 2024, Fig. 3).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from ..core.errors import ConfigError, InputError
from ..core.io import atomic_path
from ..core.plotting import check_png, pyplot
from ..core.progress import progress
from ..core.validate import check_number
from ..generate.engine import Engine, Request
from ..generate.settings import DecodingSettings
from ..kvcache.settings import KVCacheSettings, enforce, held_bytes, prefill_setup

NEEDLE = "The special magic number is {value}."
NEEDLE_QUESTION = "\nWhat is the special magic number mentioned in the text above? The special magic number is"
RULER_TASKS = ("multikey", "variables", "common_words")


def filler_ids(tokenizer: Any, texts: Sequence[str], tokens: int) -> list[int]:
    """At least ``tokens`` ids of filler: the texts in order, repeated when they run out."""
    if not texts:
        raise InputError("the haystack corpus has no text", "pass a non-empty corpus (--haystack)")
    ids: list[int] = []
    while len(ids) < tokens:
        before = len(ids)
        for text in texts:
            ids += tokenizer.encode(text.strip() + "\n")
            if len(ids) >= tokens:
                break
        if len(ids) == before:
            raise InputError("the haystack corpus encodes to no tokens", "pass a corpus with text")
    return ids[:tokens]


def _start(tokenizer: Any) -> list[int]:
    return [tokenizer.start_id] if getattr(tokenizer, "start_id", None) is not None else []


def haystack_prompt(tokenizer: Any, filler: Sequence[int], length: int, inserts: Sequence[tuple[float, str]],
                    question: str) -> list[int]:
    """A prompt of ``length`` ids: the start id, filler with each (depth in [0, 1], sentence) of ``inserts``
    placed at that share of it, then ``question``."""
    head, tail = _start(tokenizer), tokenizer.encode(question)
    pieces = [(depth, tokenizer.encode(" " + text.strip() + " ")) for depth, text in inserts]
    room = length - len(head) - len(tail) - sum(len(p) for _, p in pieces)
    if room < 1:
        raise InputError(f"a context of {length} tokens has no room for the filler around the needles and question",
                         "use longer --lengths")
    if room > len(filler):
        raise InputError(f"the haystack has {len(filler)} filler tokens, {room} are needed", "pass a longer corpus")
    out, used = list(head), 0
    for depth, piece in sorted(pieces, key=lambda p: p[0]):
        cut = int(round(depth * room))
        out += filler[used:cut] + piece
        used = max(used, cut)
    return out + list(filler[used:room]) + tail


def _engine(lm: Any, tokenizer: Any, kv_cache: KVCacheSettings | None, max_new_tokens: int) -> Engine:
    settings = DecodingSettings(greedy=True, max_new_tokens=max_new_tokens, kv_cache=kv_cache)
    return Engine(lm, tokenizer, settings=settings, decode_layout=False)


def _check_lengths(lengths: Sequence[int], lm: Any, kv_cache: KVCacheSettings | None, new_tokens: int) -> None:
    context = getattr(lm, "context_length", None)
    for n in lengths:
        check_number("context length", n, low=16, integer=True)
        if context is not None and n + new_tokens > context and not (kv_cache and kv_cache.policy.repositions):
            raise ConfigError(f"a {n}-token context plus {new_tokens} answer tokens exceeds the model's context of "
                              f"{context}", "use shorter --lengths")


def needle_grid(lm: Any, tokenizer: Any, haystack: Sequence[str], *, lengths: Sequence[int],
                depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), trials: int = 2,
                kv_cache: KVCacheSettings | None = None, seed: int = 0, max_new_tokens: int = 8) -> dict[str, Any]:
    """Needle-in-a-haystack accuracy per (context length, depth) and overall, with the cache's peak bytes."""
    check_number("trials", trials, low=1, integer=True)
    for d in depths:
        check_number("depth", d, low=0.0, high=1.0)
    _check_lengths(lengths, lm, kv_cache, max_new_tokens)
    filler = filler_ids(tokenizer, haystack, max(lengths))
    engine = _engine(lm, tokenizer, kv_cache, max_new_tokens)
    rng = random.Random(seed)
    grid, records, peak = [], [], 0
    cells = [(n, d) for n in lengths for d in depths]
    for n, d in progress(cells, desc="needle", unit="cell"):
        values = [str(rng.randrange(100000, 1000000)) for _ in range(trials)]
        prompts = [haystack_prompt(tokenizer, filler, n, [(d, NEEDLE.format(value=v))], NEEDLE_QUESTION)
                   for v in values]
        outs = engine.generate([Request(p) for p in prompts])
        hits = [v in out.text for v, out in zip(values, outs, strict=True)]
        peak = max(peak, outs[0].stats.kv_cache_bytes)
        records += [{"length": n, "depth": d, "value": v, "answer": out.text, "correct": hit}
                    for v, out, hit in zip(values, outs, hits, strict=True)]
        grid.append(sum(hits) / len(hits))
    table = [[grid[i * len(depths) + j] for j in range(len(depths))] for i in range(len(lengths))]
    return {"task": "needle", "accuracy": sum(grid) / len(grid), "lengths": list(lengths), "depths": list(depths),
            "grid": table, "trials": trials, "seed": seed, "kv_cache_bytes": peak,
            "kv_cache": kv_cache.to_dict() if kv_cache is not None else None, "records": records}


def heat_map(result: dict[str, Any], path: str) -> str:
    """Save a needle grid as a PNG heat map (depth down, context length across)."""
    plt = pyplot("the needle heat map")
    check_png(path, "heat map")
    grid = torch.tensor(result["grid"]).T  # depths × lengths
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * grid.shape[1], 1.2 + 0.6 * grid.shape[0]), dpi=100)
    image = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(result["lengths"])), [str(n) for n in result["lengths"]])
    ax.set_yticks(range(len(result["depths"])), [f"{d:.0%}" for d in result["depths"]])
    for (j, i), value in zip(((j, i) for j in range(grid.shape[0]) for i in range(grid.shape[1])),
                             grid.flatten().tolist(), strict=True):
        ax.text(i, j, f"{value:.2f}", ha="center", va="center", fontsize=8)
    kv = result.get("kv_cache") or {"policy": "full"}
    budget = f", budget {kv['budget']}" if kv.get("budget") is not None else ""
    ax.set(xlabel="context length (tokens)", ylabel="needle depth",
           title=f"needle accuracy {result['accuracy']:.2f} ({kv['policy']}{budget})")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return str(path)


# --- RULER-style tasks -----------------------------------------------------------------------------
def vocabulary(texts: Sequence[str], least: int = 12) -> list[str]:
    """The distinct lowercase words of 4–10 letters in the corpus: what the tasks draw keys and lists from."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in text.split():
            word = word.strip(".,;:()[]'\"").lower()
            if word.isalpha() and 4 <= len(word) <= 10:
                seen.setdefault(word, None)
    if len(seen) < least:
        raise InputError(f"the corpus has {len(seen)} distinct words, the tasks need {least}", "pass a larger corpus")
    return sorted(seen)


def _multikey(tokenizer: Any, filler: list[int], length: int, words: list[str], rng: random.Random
              ) -> tuple[list[int], list[str]]:
    keys = words[:4]
    values = [str(rng.randrange(100000, 1000000)) for _ in keys]
    inserts = [(rng.random(), f"One of the special magic numbers for {k} is: {v}.") for k, v in zip(keys, values,
                                                                                                    strict=True)]
    asked = rng.randrange(len(keys))
    question = (f"\nWhat is the special magic number for {keys[asked]} mentioned in the provided text? "
                f"The special magic number for {keys[asked]} mentioned in the provided text is")
    return haystack_prompt(tokenizer, filler, length, inserts, question), [values[asked]]


def _variables(tokenizer: Any, filler: list[int], length: int, words: list[str], rng: random.Random
               ) -> tuple[list[int], list[str]]:
    names = [w.upper()[:5] for w in words[:4]]
    value = str(rng.randrange(10000, 100000))
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i]} = VAR {names[i - 1]}." for i in range(1, len(names))]
    depths = sorted(rng.random() for _ in chain)
    question = (f"\nQuestion: Find all variables that are assigned the value {value} in the text above. "
                f"Answer: According to the chain of variable assignments in the text above, {len(names)} "
                f"variables are assigned the value {value}, they are:")
    return haystack_prompt(tokenizer, filler, length, list(zip(depths, chain, strict=True)), question), names


def _common_words(tokenizer: Any, length: int, words: list[str], rng: random.Random) -> tuple[list[int], list[str]]:
    common, rare = words[:5], words[5:]
    question = ("\nQuestion: What are the 5 most common words in the above list? "
                "Answer: The top 5 words that appear most often in the list are:")
    budget = length - len(_start(tokenizer)) - len(tokenizer.encode(question))
    listed: list[str] = []
    entries: list[int] = []
    while True:  # common words 6× as often as rare ones, until the context is full
        word = rng.choice(common) if rng.random() < 6 * len(common) / (6 * len(common) + len(rare)) \
            else rng.choice(rare)
        piece = tokenizer.encode(f" {len(listed) + 1}. {word}")
        if len(entries) + len(piece) > budget:
            break
        listed.append(word)
        entries += piece
    return _start(tokenizer) + entries + tokenizer.encode(question), common


def ruler_suite(lm: Any, tokenizer: Any, corpus: Sequence[str], *, lengths: Sequence[int],
                tasks: Sequence[str] = RULER_TASKS, samples: int = 4, kv_cache: KVCacheSettings | None = None,
                seed: int = 0, max_new_tokens: int = 24) -> dict[str, Any]:
    """Each task's mean string-match recall per context length, and their mean (the RULER score)."""
    check_number("samples", samples, low=1, integer=True)
    for task in tasks:
        if task not in RULER_TASKS:
            raise ConfigError(f"unknown RULER task {task!r}", f"choose from {', '.join(RULER_TASKS)}")
    _check_lengths(lengths, lm, kv_cache, max_new_tokens)
    filler = filler_ids(tokenizer, corpus, max(lengths))
    engine = _engine(lm, tokenizer, kv_cache, max_new_tokens)
    rng = random.Random(seed)
    vocab = vocabulary(corpus)
    scores: dict[str, dict[int, float]] = {t: {} for t in tasks}
    records, peak = [], 0
    cells = [(t, n) for t in tasks for n in lengths]
    for task, n in progress(cells, desc="ruler", unit="cell"):
        built = []
        for _ in range(samples):
            words = rng.sample(vocab, min(len(vocab), 40))
            if task == "multikey":
                built.append(_multikey(tokenizer, filler, n, words, rng))
            elif task == "variables":
                built.append(_variables(tokenizer, filler, n, words, rng))
            else:
                built.append(_common_words(tokenizer, n, words, rng))
        outs = engine.generate([Request(p) for p, _ in built])
        peak = max(peak, outs[0].stats.kv_cache_bytes)
        recalls = []
        for (_, expected), out in zip(built, outs, strict=True):
            text = out.text.lower()
            recalls.append(sum(e.lower() in text for e in expected) / len(expected))
            records.append({"task": task, "length": n, "expected": expected, "answer": out.text,
                            "recall": recalls[-1]})
        scores[task][n] = sum(recalls) / len(recalls)
    per_task = {t: sum(v.values()) / len(v) for t, v in scores.items()}
    return {"task": "ruler", "score": sum(per_task.values()) / len(per_task), "tasks": per_task,
            "by_length": {t: {str(n): s for n, s in v.items()} for t, v in scores.items()},
            "samples": samples, "seed": seed, "kv_cache_bytes": peak,
            "kv_cache": kv_cache.to_dict() if kv_cache is not None else None, "records": records}


# --- perplexity of a long stream -------------------------------------------------------------------
@torch.no_grad()
def stream_perplexity(lm: Any, ids: Sequence[int], *, kv_cache: KVCacheSettings | None = None, chunk: int = 64,
                      segment: int = 2048) -> dict[str, Any]:
    """Feed ``ids`` in chunks of ``chunk`` tokens through one cache run by ``kv_cache``'s policy (evicting
    after every chunk) and score every token; perplexity overall and per ``segment`` tokens. A cache
    that does not close up positions stops at the model's context (``stopped_at``)."""
    check_number("chunk", chunk, low=1, integer=True)
    check_number("segment", segment, low=1, integer=True)
    if len(ids) < 2:
        raise InputError("the stream needs at least two tokens", "pass a longer text")
    if kv_cache is not None:
        kv_cache.check_model(lm)
        if not kv_cache.policy.online and kv_cache.policy.name != "full":
            raise ConfigError(f"{kv_cache.policy.name} compresses a prompt once; a stream needs a policy that evicts "
                              "as it goes", "use window, streaming, h2o, tova or knorm")
        if isinstance(kv_cache.policy.budget, float) and kv_cache.policy.budget < 1:
            raise ConfigError("a stream has no prompt length to take a fraction of", "give --kv-budget in tokens")
    context = getattr(lm, "context_length", None)
    bounded = kv_cache is not None and kv_cache.bounded
    limit = len(ids) if bounded or context is None else min(len(ids), context)
    stream = torch.tensor(list(ids[:limit]), dtype=torch.long, device=lm.device).unsqueeze(0)
    state = lm.initial_state(1, capacity=chunk + 64, growable=True)
    setup = prefill_setup([kv_cache])
    if setup is not None:
        setup(state)
    nll = torch.zeros(limit - 1, dtype=torch.float64)
    last, peak = None, 0
    for start in progress(range(0, limit, chunk), desc="stream", unit="chunk"):
        piece = stream[:, start:start + chunk]
        logits, state = lm(piece, state)
        logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        if last is not None:
            nll[start - 1] = -float(last[piece[0, 0]])
        inner = piece.shape[1] - 1
        if inner:
            nll[start:start + inner] = -logprobs[:-1].gather(1, piece[0, 1:].unsqueeze(1)).squeeze(1).double().cpu()
        last = logprobs[-1]
        if kv_cache is not None:
            enforce(state, [([0], kv_cache, 0, "step")])
        peak = max(peak, held_bytes(state))
    segments = []
    for a in range(0, limit - 1, segment):
        part = nll[a:a + segment]
        segments.append({"start": a + 1, "end": a + 1 + len(part), "perplexity": math.exp(float(part.mean()))})
    return {"tokens": limit, "scored": limit - 1, "perplexity": math.exp(float(nll.mean())), "segments": segments,
            "stopped_at": None if limit == len(ids) else limit, "chunk": chunk,
            "kv_cache": kv_cache.to_dict() if kv_cache is not None else None, "kv_cache_bytes": peak}
