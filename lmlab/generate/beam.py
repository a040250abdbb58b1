"""Beam search and its variants through the protocol only: plain, diverse (group) and stochastic.

Beams are rows of one batch: each step scores every child of every live beam, keeps the best,
and reorders the model state with ``select_state``. Scores are sums of log-probabilities after
the processors (renormalised); a finished hypothesis is ranked by score / length^α
(``length_penalty`` α; length = generated tokens including the stop token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.errors import ConfigError
from ..core.seed import make_generator
from ..core.validate import check_number
from ..lm import LanguageModel
from .processors import Processor, apply
from .sampling import Generation, prefill, stop_set

NEG_INF = float("-inf")


def _finished_score(total: float, length: int, length_penalty: float) -> float:
    return total / (max(length, 1) ** length_penalty)


def beam_search(lm: LanguageModel, prompt: Sequence[int], *, beam_size: int = 4, max_new_tokens: int = 50,
                length_penalty: float = 1.0, early_stopping: bool = True, processors: Sequence[Processor] = (),
                stop_ids: Sequence[int] | None = None, num_return: int = 1) -> list[Generation]:
    """Standard beam search: the ``num_return`` best hypotheses, best first."""
    return diverse_beam_search(lm, prompt, beam_size=beam_size, groups=1, diversity_penalty=0.0,
                               max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                               early_stopping=early_stopping, processors=processors, stop_ids=stop_ids,
                               num_return=num_return)


def diverse_beam_search(lm: LanguageModel, prompt: Sequence[int], *, beam_size: int = 4, groups: int = 2,
                        diversity_penalty: float = 0.5, max_new_tokens: int = 50, length_penalty: float = 1.0,
                        early_stopping: bool = True, processors: Sequence[Processor] = (),
                        stop_ids: Sequence[int] | None = None, num_return: int = 1) -> list[Generation]:
    """Diverse beam search (Vijayakumar et al., 2018): ``beam_size`` beams in ``groups`` groups; a
    group's scores are lowered by ``diversity_penalty`` × how often earlier groups chose each token
    at this step (Hamming diversity). ``groups=1`` is plain beam search."""
    check_number("beam_size", beam_size, low=1, integer=True)
    check_number("groups", groups, low=1, integer=True)
    check_number("max_new_tokens", max_new_tokens, low=1, integer=True)
    check_number("num_return", num_return, low=1, integer=True)
    if beam_size % groups:
        raise ConfigError(f"groups = {groups} does not divide beam_size = {beam_size}",
                          "use a beam size that is a multiple of the number of groups")
    k = beam_size // groups
    stops = stop_set(lm, stop_ids)
    with torch.no_grad():
        logprobs, state, history = prefill(lm, prompt, beam_size)
        prompt_length, vocab = history.shape[1], logprobs.shape[1]
        beam_scores = torch.full((beam_size,), NEG_INF, device=logprobs.device)
        beam_scores[::k] = 0.0  # one live beam per group at the start: no duplicate hypotheses
        tokens: list[list[int]] = [[] for _ in range(beam_size)]
        token_lps: list[list[float]] = [[] for _ in range(beam_size)]
        finished: list[list[Generation]] = [[] for _ in range(groups)]
        done = [False] * groups
        for step in range(max_new_tokens):
            scores = apply(processors, logprobs, history, prompt_length).log_softmax(dim=-1)
            chosen_now = torch.zeros(vocab, device=scores.device)
            rows, next_tokens, next_scores = [], [], []
            for g in range(groups):
                lo = g * k
                if done[g]:  # keep a finished group's rows in place; they are never read again
                    rows += list(range(lo, lo + k))
                    next_tokens += [0] * k
                    next_scores += [NEG_INF] * k
                    continue
                cand = beam_scores[lo:lo + k, None] + scores[lo:lo + k] - diversity_penalty * chosen_now
                top = cand.reshape(-1).topk(min(2 * k, cand.numel()))
                picked = 0
                for rank, (val, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
                    if val == NEG_INF:
                        break
                    row, tok = lo + flat // vocab, flat % vocab
                    if tok in stops:
                        if rank < k:
                            true_total = float(beam_scores[row] + scores[row, tok])
                            finished[g].append(Generation(
                                ids=list(tokens[row]), logprobs=list(token_lps[row]), finish_reason="stop",
                                score=_finished_score(true_total, len(tokens[row]) + 1, length_penalty)))
                        continue
                    rows.append(row)
                    next_tokens.append(tok)
                    next_scores.append(float(beam_scores[row] + scores[row, tok]))
                    chosen_now[tok] += 1
                    picked += 1
                    if picked == k:
                        break
                while picked < k:  # fewer live children than beams: pad with dead rows
                    rows.append(lo)
                    next_tokens.append(0)
                    next_scores.append(NEG_INF)
                    picked += 1
                done[g] = _group_done(finished[g], next_scores[-k:], k, step + 1, length_penalty, early_stopping)
            if all(done) or step == max_new_tokens - 1:
                break
            index = torch.tensor(rows, dtype=torch.long, device=logprobs.device)
            tok_tensor = torch.tensor(next_tokens, dtype=torch.long, device=logprobs.device)
            new_tokens, new_lps = [], []
            for row, tok in zip(rows, next_tokens, strict=True):
                new_tokens.append(tokens[row] + [tok])
                new_lps.append(token_lps[row] + [float(logprobs[row, tok])])
            tokens, token_lps = new_tokens, new_lps
            beam_scores = torch.tensor(next_scores, device=logprobs.device)
            state = lm.select_state(state, index)
            history = torch.cat([history[index], tok_tensor.unsqueeze(1)], dim=1)
            logprobs, state = lm.next_logprobs(tok_tensor.unsqueeze(1), state)
            logprobs = logprobs.float()
        # the budget ran out: beams still alive in unfinished groups end with reason "length"
        for j, (row, tok, total) in enumerate(zip(rows, next_tokens, next_scores, strict=True)):
            if done[j // k] or total == NEG_INF:
                continue
            ids = tokens[row] + [tok]
            lps = token_lps[row] + [float(logprobs[row, tok])]
            finished[j // k].append(Generation(ids=ids, logprobs=lps, finish_reason="length",
                                               score=_finished_score(total, len(ids), length_penalty)))
    out = [gen for group in finished for gen in sorted(group, key=lambda h: -h.score)[:k]]
    return sorted(out, key=lambda h: -h.score)[:num_return]


def _group_done(finished: list[Generation], live_scores: list[float], k: int, cur_len: int,
                length_penalty: float, early_stopping: bool) -> bool:
    """A group stops once it has k finished hypotheses and (unless ``early_stopping``) no live beam
    could still beat the worst of the best k."""
    if len(finished) < k:
        return False
    if early_stopping:
        return True
    best_live = max(live_scores)
    if best_live == NEG_INF:
        return True
    worst_kept = sorted(h.score for h in finished)[-k]
    return _finished_score(best_live, cur_len + 1, length_penalty) <= worst_kept


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, accurate at both ends."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def stochastic_beam_search(lm: LanguageModel, prompt: Sequence[int], *, beam_size: int = 4,
                           max_new_tokens: int = 50, processors: Sequence[Processor] = (),
                           seed: int | None = None, stop_ids: Sequence[int] | None = None) -> list[Generation]:
    """Stochastic beam search (Kool et al., 2019): ``beam_size`` sequences sampled *without
    replacement* from the model (after the processors) via Gumbel-top-k with truncated Gumbels.
    ``score`` is each sequence's log-probability; results are ordered by their Gumbel keys."""
    check_number("beam_size", beam_size, low=1, integer=True)
    check_number("max_new_tokens", max_new_tokens, low=1, integer=True)
    stops = stop_set(lm, stop_ids)
    gen = make_generator(seed, lm.device)
    with torch.no_grad():
        logprobs, state, history = prefill(lm, prompt, beam_size)
        prompt_length, vocab = history.shape[1], logprobs.shape[1]
        phi = torch.full((beam_size,), NEG_INF, device=logprobs.device)
        phi[0] = 0.0
        keys = phi.clone()  # perturbed log-probabilities; the root's is 0
        tokens: list[list[int]] = [[] for _ in range(beam_size)]
        token_lps: list[list[float]] = [[] for _ in range(beam_size)]
        finished: list[tuple[float, Generation]] = []
        for step in range(max_new_tokens):
            scores = apply(processors, logprobs, history, prompt_length).log_softmax(dim=-1)
            child_phi = phi[:, None] + scores
            uniform = torch.rand(child_phi.shape, generator=gen, device=child_phi.device).clamp_min(1e-20)
            gumbel = child_phi - torch.log(-torch.log(uniform))
            z = gumbel.max(dim=1, keepdim=True).values
            v = keys[:, None] - gumbel + _log1mexp((gumbel - z).clamp(max=0.0))
            child_keys = keys[:, None] - v.clamp(min=0.0) - torch.log1p(torch.exp(-v.abs()))
            child_keys = torch.where(torch.isfinite(child_phi), child_keys, torch.full_like(child_keys, NEG_INF))
            # the beam holds the best keys among live children and sequences already finished
            pool_keys = torch.cat([child_keys.reshape(-1), torch.tensor([k for k, _ in finished], device=keys.device)])
            order = pool_keys.topk(min(beam_size, int(torch.isfinite(pool_keys).sum()))).indices.tolist()
            n_children = child_keys.numel()
            kept_finished = [finished[i - n_children] for i in order if i >= n_children]
            rows, next_tokens, new_phi, new_keys = [], [], [], []
            for i in order:
                if i >= n_children:
                    continue
                row, tok = i // vocab, i % vocab
                if tok in stops:
                    kept_finished.append((float(child_keys[row, tok]), Generation(
                        ids=list(tokens[row]), logprobs=list(token_lps[row]), finish_reason="stop",
                        score=float(child_phi[row, tok]))))
                    continue
                rows.append(row)
                next_tokens.append(tok)
                new_phi.append(float(child_phi[row, tok]))
                new_keys.append(float(child_keys[row, tok]))
            finished = kept_finished
            if not rows:
                break
            if step == max_new_tokens - 1:
                for row, tok, p, key in zip(rows, next_tokens, new_phi, new_keys, strict=True):
                    finished.append((key, Generation(ids=tokens[row] + [tok],
                                                     logprobs=token_lps[row] + [float(logprobs[row, tok])],
                                                     finish_reason="length", score=p)))
                break
            pad = beam_size - len(rows)
            index = torch.tensor(rows + [rows[0]] * pad, dtype=torch.long, device=logprobs.device)
            tok_tensor = torch.tensor(next_tokens + [next_tokens[0]] * pad, dtype=torch.long, device=logprobs.device)
            tokens = [tokens[r] + [t] for r, t in zip(rows, next_tokens, strict=True)] + [[]] * pad
            token_lps = [token_lps[r] + [float(logprobs[r, t])] for r, t in zip(rows, next_tokens, strict=True)] + [[]] * pad
            phi = torch.tensor(new_phi + [NEG_INF] * pad, device=logprobs.device)
            keys = torch.tensor(new_keys + [NEG_INF] * pad, device=logprobs.device)
            state = lm.select_state(state, index)
            history = torch.cat([history[index], tok_tensor.unsqueeze(1)], dim=1)
            logprobs, state = lm.next_logprobs(tok_tensor.unsqueeze(1), state)
            logprobs = logprobs.float()
    return [g for _, g in sorted(finished, key=lambda kg: -kg[0])]
