"""Log-likelihood and generation requests to any protocol model, batched and cached.

A request is ``(context, continuation)``; its answer is log p(continuation | context) summed
over the continuation's tokens. Tokenisation follows lm-evaluation-harness: trailing spaces
of the context move to the continuation, the pair is encoded together and the context's
tokens are cut off, so a word's leading space stays with the word. Requests are
deduplicated and cached (optionally in a JSON file, keyed by model identity), sorted
longest first and scored in padded batches with ``LanguageModel.score``. On a transformer,
requests that share a context (a question's choices) run it once: the contexts of a batch
are encoded left-padded, their KV cache is copied to each continuation, and the output head
runs only where a continuation token is predicted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError, ModelError
from ..core.io import write_json
from ..core.progress import progress
from ..generate.engine import Engine
from ..generate.engine import Request as GenerationRequest
from ..generate.settings import DecodingSettings
from ..lm import LanguageModel, check_tokenizer

Request = tuple[str, str]


class RequestRunner:
    """Answers log-likelihood, greedy-match and generation requests for one model and tokenizer."""

    def __init__(self, lm: LanguageModel, tokenizer, *, batch_size: int = 16, cache_path: str | None = None,
                 model_id: str = "", start_always: bool = True, share_contexts: bool = True,
                 kv_cache: Any = None) -> None:
        check_tokenizer(lm, tokenizer)
        # a KV-cache policy (lmlab.kvcache.KVCacheSettings) for generated answers; scoring reads whole contexts
        self.kv_cache = kv_cache
        self.lm, self.tokenizer, self.batch_size = lm, tokenizer, batch_size
        # the start rule changes every number, so it is part of the cache's identity
        self.model_id = f"{model_id}|{tokenizer.fingerprint()}|start:{'always' if start_always else 'empty'}"
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, float] = {}
        self.calls = {"scored": 0, "cached": 0}
        if self.cache_path and self.cache_path.exists():
            with open(self.cache_path, encoding="utf-8") as fh:
                stored = json.load(fh)
            if stored.get("model") == self.model_id:  # never reuse another model's numbers
                self.cache = stored.get("loglikelihood", {})
        prefix = lm.bos_id if lm.bos_id is not None else lm.eos_id
        if prefix is None:
            raise ModelError("the model has neither a BOS nor an EOS id to start a context with",
                             "give the tokenizer a <s> or </s> special token")
        self.prefix = prefix
        # lmlab's protocol starts every sequence with BOS; lm-evaluation-harness adds its start id
        # only when the context is empty (start_always=False reproduces that)
        self.start_always = start_always
        # a transformer can encode a shared context once and continue its cache per continuation
        self.share_contexts = share_contexts and hasattr(lm, "hidden_states") and hasattr(lm, "head")

    # --- tokenisation -------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids after the start id, continuation ids) as lm-evaluation-harness splits them."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self.tokenizer.encode(context)
        whole = self.tokenizer.encode(context + continuation)
        start = [self.prefix] if self.start_always or not ctx else []
        if whole[:len(ctx)] != ctx:  # the tokenizer merged across the boundary: encode apart
            return [*start, *ctx], self.tokenizer.encode(continuation)
        return [*start, *ctx], whole[len(ctx):]

    def _fit(self, ctx: list[int], cont: list[int], room: int = 0) -> list[int]:
        ids = ctx + cont
        limit = self.lm.context_length
        if limit is not None and len(ids) > limit + 1 - room:
            ids = ids[len(ids) - (limit + 1 - room):]  # drop the oldest context
        return ids

    # --- log-likelihood -----------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[Request]) -> list[float]:
        """log p(continuation | context) for each request (natural log)."""
        if self.kv_cache is not None and requests:
            raise ConfigError("a KV-cache policy applies to generated answers; log-likelihood items score whole "
                              "contexts", "leave --kv-policy/--kv-quant out for multiple-choice tasks")
        keys = [json.dumps(r, ensure_ascii=False) for r in requests]
        todo = sorted({k for k in keys if k not in self.cache})
        self.calls["cached"] += len(keys) - len(todo)
        encoded, shared = [], []
        limit = self.lm.context_length
        for key in todo:
            ctx, cont = self.encode_pair(*json.loads(key))
            if not cont:
                raise ModelError(f"the continuation {json.loads(key)[1]!r} has no tokens",
                                 "give every choice or target some text")
            if self.share_contexts and (limit is None or len(ctx) + len(cont) <= limit + 1):
                shared.append((key, ctx, cont))
                continue
            ids = self._fit(ctx, cont)
            encoded.append((key, ids, min(len(cont), len(ids) - 1)))
        if shared:
            self._score_shared(shared)
        encoded.sort(key=lambda e: -len(e[1]))
        pad = self.lm.pad_id if self.lm.pad_id is not None else 0
        starts = range(0, len(encoded), self.batch_size)
        for start in progress(starts, desc="log-likelihoods", unit="batch"):
            batch = encoded[start:start + self.batch_size]
            length = len(batch[0][1])
            ids = torch.full((len(batch), length), pad, dtype=torch.long)
            for row, (_, seq, _) in enumerate(batch):
                ids[row, :len(seq)] = torch.tensor(seq)
            with torch.no_grad():
                scores = self.lm.score(ids.to(self.lm.device)).double().cpu()
            for row, (key, seq, n_cont) in enumerate(batch):
                self.cache[key] = float(scores[row, len(seq) - 1 - n_cont:len(seq) - 1].sum())
            self.calls["scored"] += len(batch)
        self.save()
        return [self.cache[k] for k in keys]

    def _score_shared(self, requests: list[tuple[str, list[int], list[int]]]) -> None:
        """Score requests grouped by context: each context runs once, its cache serves every continuation."""
        groups: dict[tuple[int, ...], list[tuple[str, list[int]]]] = {}
        for key, ctx, cont in requests:
            groups.setdefault(tuple(ctx), []).append((key, cont))
        order = sorted(groups, key=lambda c: -(len(c) + max(len(t) for _, t in groups[c])))
        batches, current, rows = [], [], 0
        for ctx in order:  # about batch_size continuations per batch, similar lengths together
            current.append(ctx)
            rows += len(groups[ctx])
            if rows >= self.batch_size:
                batches.append(current)
                current, rows = [], 0
        if current:
            batches.append(current)
        for batch in progress(batches, desc="log-likelihoods", unit="batch"):
            with torch.no_grad():
                scores = self._shared_batch([(list(c), groups[c]) for c in batch])
            for key, value in scores:
                self.cache[key] = value
            self.calls["scored"] += len(scores)

    def _shared_batch(self, batch: list[tuple[list[int], list[tuple[str, list[int]]]]]) -> list[tuple[str, float]]:
        lm, device = self.lm, self.lm.device
        pad = lm.pad_id if lm.pad_id is not None else 0
        width = max(len(ctx) for ctx, _ in batch)
        ctx_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        ctx_mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (ctx, _) in enumerate(batch):  # left padding: every context ends at the last column
            ctx_ids[row, width - len(ctx):] = torch.tensor(ctx)
            ctx_mask[row, width - len(ctx):] = True
        mask = None if bool(ctx_mask.all()) else ctx_mask.to(device)
        hidden, state = lm.hidden_states(ctx_ids.to(device), None, mask)
        first = torch.log_softmax(lm.head(hidden[:, -1]).float(), dim=-1)  # [G, V]: each continuation's first token
        owner = [g for g, (_, conts) in enumerate(batch) for _ in conts]
        conts = [(key, cont) for _, group in batch for key, cont in group]
        totals = [float(first[g, cont[0]]) for g, (_, cont) in zip(owner, conts, strict=True)]
        longest = max(len(cont) for _, cont in conts)
        if longest > 1:  # the rest of each continuation, after its group's cached context
            feed = torch.full((len(conts), longest - 1), pad, dtype=torch.long)
            feed_mask = torch.zeros((len(conts), longest - 1), dtype=torch.bool)
            for row, (_, cont) in enumerate(conts):
                feed[row, :len(cont) - 1] = torch.tensor(cont[:-1])
                feed_mask[row, :len(cont) - 1] = True
            expanded = lm.select_state(state, torch.tensor(owner, device=device))
            hidden, _ = lm.hidden_states(feed.to(device), expanded, feed_mask.to(device))
            targets = torch.full((len(conts), longest - 1), 0, dtype=torch.long)
            for row, (_, cont) in enumerate(conts):
                targets[row, :len(cont) - 1] = torch.tensor(cont[1:])
            picked = feed_mask.to(device)
            logprobs = torch.log_softmax(lm.head(hidden[picked]).float(), dim=-1)  # only real positions
            chosen = logprobs.gather(1, targets.to(device)[picked].unsqueeze(1)).squeeze(1).double().cpu()
            per_row = feed_mask.sum(1).tolist()
            offset = 0
            for row, n in enumerate(per_row):
                totals[row] += float(chosen[offset:offset + n].sum())
                offset += n
        return [(key, total) for (key, _), total in zip(conts, totals, strict=True)]

    def save(self) -> None:
        if self.cache_path:
            write_json(self.cache_path, {"model": self.model_id, "loglikelihood": self.cache})

    # --- greedy match and generation ------------------------------------------------------------
    def is_greedy(self, context: str, continuation: str) -> bool:
        """Whether greedy decoding after ``context`` produces exactly ``continuation``'s tokens."""
        ctx, cont = self.encode_pair(context, continuation)
        ids = self._fit(ctx, cont)
        prompt, target = ids[:len(ids) - len(cont)], ids[len(ids) - len(cont):]
        with torch.no_grad():
            logprobs, state = self.lm.next_logprobs(torch.tensor([prompt], device=self.lm.device),
                                                    self.lm.initial_state(1))
            for i, tok in enumerate(target):
                if int(logprobs[0].argmax()) != tok:
                    return False
                if i < len(target) - 1:
                    logprobs, state = self.lm.next_logprobs(torch.tensor([[tok]], device=self.lm.device), state)
        return True

    def generate(self, context: str, *, until: Sequence[str] = (), max_new_tokens: int = 256) -> str:
        """Greedy continuation of ``context``, cut at the first of the ``until`` strings."""
        return self.generate_many([context], until=until, max_new_tokens=max_new_tokens)[0]

    def generate_many(self, contexts: Sequence[str], *, until: Sequence[str] = (),
                      max_new_tokens: int = 256) -> list[str]:
        """Greedy continuations of ``contexts``, ``batch_size`` at a time through the decoding loop, each
        cut at the first of the ``until`` strings; a context too long keeps its last tokens."""
        settings = DecodingSettings(greedy=True, max_new_tokens=max_new_tokens, stop=tuple(s for s in until if s),
                                    kv_cache=self.kv_cache)
        engine = Engine(self.lm, self.tokenizer, settings=settings, on_overflow="truncate", decode_layout=False)
        texts: list[str] = []
        starts = range(0, len(contexts), self.batch_size)
        for start in progress(starts, desc="generating", unit="batch", total=len(starts)):
            batch = contexts[start:start + self.batch_size]
            outs = engine.generate([GenerationRequest([self.prefix, *self.tokenizer.encode(c)]) for c in batch])
            texts += [out.text for out in outs]
        return texts
