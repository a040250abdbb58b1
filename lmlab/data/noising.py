"""Pretraining noise as pure functions over token ids: BERT masking and next-sentence pairs, ALBERT's
sentence-order pairs,
T5 span corruption, BART denoising and ELECTRA's replaced-token labels.

Every function takes ids (a torch tensor or anything ``torch.as_tensor`` accepts) and an
optional seeded ``torch.Generator``, and returns new tensors; nothing here knows a model.
Labels use ``IGNORE_INDEX`` (-100, PyTorch's cross-entropy default) where there is no target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.errors import ConfigError, DataError, InputError
from ..core.validate import check_number

IGNORE_INDEX = -100


def _as_ids(ids, name: str = "ids") -> torch.Tensor:
    """ids as an int64 tensor, or InputError when they are not integers."""
    tensor = torch.as_tensor(ids)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise InputError(f"{name} must hold integer token ids, got dtype {tensor.dtype}",
                         "pass a LongTensor (or a list of ints)")
    return tensor.long()


def _as_1d(ids, name: str = "ids") -> torch.Tensor:
    tensor = _as_ids(ids, name)
    if tensor.dim() != 1:
        raise InputError(f"{name} must be one sequence (1-D), got shape {tuple(tensor.shape)}",
                         "call the function once per sequence")
    return tensor


def _special_mask(ids: torch.Tensor, special_ids: Sequence[int]) -> torch.Tensor:
    if len(special_ids) == 0:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.isin(ids, torch.as_tensor(list(special_ids), dtype=torch.long))


# ---------------------------------------------------------------- BERT masked LM


def word_start_table(pieces: Sequence[str], *, continuation_prefix: str | None = None,
                     start_prefix: str | None = None) -> torch.Tensor:
    """Per vocabulary id, whether the piece starts a word (index it with ids for word starts).

    WordPiece marks continuations (``continuation_prefix="##"``); SentencePiece and byte-level
    BPE mark word starts (``start_prefix="▁"`` or ``"Ġ"``). Give exactly one of the two.
    """
    if (continuation_prefix is None) == (start_prefix is None):
        raise ConfigError("word_start_table needs exactly one of continuation_prefix and start_prefix",
                          "use continuation_prefix='##' for WordPiece, start_prefix='▁' for SentencePiece")
    if continuation_prefix is not None:
        flags = [not piece.startswith(continuation_prefix) for piece in pieces]
    else:
        flags = [piece.startswith(start_prefix) for piece in pieces]
    return torch.tensor(flags, dtype=torch.bool)


def _word_start_positions(word_starts: torch.Tensor) -> torch.Tensor:
    """For every position, the position of the first token of its word (along the last dim)."""
    positions = torch.arange(word_starts.shape[-1]).expand_as(word_starts)
    return torch.cummax(torch.where(word_starts, positions, 0), dim=-1).values


def mask_tokens(ids, *, mask_id: int, vocab_size: int | None = None, rate: float = 0.15,
                mask_fraction: float = 0.8, random_fraction: float = 0.1,
                special_ids: Sequence[int] = (), word_starts=None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM noise: returns ``(inputs, labels)``.

    Each non-special token (or, with ``word_starts``, each whole word) is selected with
    probability ``rate``; a selected token becomes ``mask_id`` with probability
    ``mask_fraction``, a random non-special id with probability ``random_fraction``, and
    stays itself otherwise. ``labels`` hold the original id where selected, -100 elsewhere.
    """
    ids = _as_ids(ids)
    check_number("rate", rate, low=0.0, high=1.0)
    check_number("mask_fraction", mask_fraction, low=0.0, high=1.0)
    check_number("random_fraction", random_fraction, low=0.0, high=1.0)
    if mask_fraction + random_fraction > 1.0 + 1e-12:
        raise ConfigError(f"mask_fraction + random_fraction = {mask_fraction + random_fraction} exceeds 1",
                          "BERT uses 0.8 and 0.1; the rest of the selected tokens stay unchanged")
    if random_fraction > 0 and vocab_size is None:
        raise ConfigError("random replacement needs vocab_size", "pass vocab_size= or random_fraction=0")
    if ids.numel() == 0:
        return ids.clone(), ids.clone()
    candidate = ~_special_mask(ids, special_ids)
    draw = torch.rand(ids.shape, generator=generator)
    if word_starts is not None:
        starts = torch.as_tensor(word_starts, dtype=torch.bool)
        if starts.shape != ids.shape:
            raise InputError(f"word_starts has shape {tuple(starts.shape)} but ids have {tuple(ids.shape)}",
                             "give one flag per token (True where a word begins)")
        starts = starts | ~candidate          # a special token is a word of its own
        starts[..., 0] = True
        draw = draw.gather(-1, _word_start_positions(starts))
    selected = (draw < rate) & candidate
    labels = torch.where(selected, ids, IGNORE_INDEX)

    action = torch.rand(ids.shape, generator=generator)
    to_mask = selected & (action < mask_fraction)
    to_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    inputs = torch.where(to_mask, mask_id, ids)
    if random_fraction > 0:
        vocab = torch.arange(vocab_size)
        allowed = vocab[~torch.isin(vocab, torch.as_tensor([mask_id, *special_ids], dtype=torch.long))]
        if allowed.numel() == 0:
            raise ConfigError("no ordinary token id is left for random replacement",
                              "check vocab_size and special_ids")
        replacement = allowed[torch.randint(allowed.numel(), ids.shape, generator=generator)]
        inputs = torch.where(to_random, replacement, inputs)
    return inputs, labels


# ---------------------------------------------------------------- next-sentence prediction

IS_NEXT, NOT_NEXT = 0, 1   # Hugging Face's convention for next_sentence_label


def next_sentence_pairs(documents: Sequence[Sequence[Sequence[int]]], *, random_fraction: float = 0.5,
                        generator: torch.Generator | None = None) -> list[tuple[list[int], list[int], int]]:
    """BERT's next-sentence-prediction data: ``(a, b, label)`` for each adjacent sentence pair.

    With probability ``random_fraction`` sentence b is replaced by a random sentence of another
    document (label ``NOT_NEXT`` = 1); otherwise b is the true next sentence (``IS_NEXT`` = 0).
    """
    check_number("random_fraction", random_fraction, low=0.0, high=1.0)
    docs = [[list(map(int, sentence)) for sentence in doc] for doc in documents]
    donors = [i for i, doc in enumerate(docs) if doc]
    pairs = []
    for index, doc in enumerate(docs):
        for a, true_b in zip(doc, doc[1:], strict=False):
            if float(torch.rand((), generator=generator)) < random_fraction:
                others = [i for i in donors if i != index]
                if not others:
                    raise InputError("a random next sentence needs a second non-empty document",
                                     "give at least two documents or random_fraction=0")
                other = docs[others[int(torch.randint(len(others), (), generator=generator))]]
                b = other[int(torch.randint(len(other), (), generator=generator))]
                pairs.append((a, b, NOT_NEXT))
            else:
                pairs.append((a, true_b, IS_NEXT))
    return pairs


IN_ORDER, SWAPPED = 0, 1   # sentence-order prediction labels (ALBERT)


def sentence_order_pairs(documents: Sequence[Sequence[Sequence[int]]], *, swap_fraction: float = 0.5,
                         generator: torch.Generator | None = None) -> list[tuple[list[int], list[int], int]]:
    """ALBERT's sentence-order-prediction data (Lan et al., 2020, §3.1): ``(a, b, label)`` for each pair
    of consecutive segments of a document, in order (``IN_ORDER`` = 0) or, with probability
    ``swap_fraction``, swapped (``SWAPPED`` = 1). Both segments always come from the same document, so
    the task is about order (coherence), not topic as BERT's next-sentence prediction partly is.
    A document of fewer than two segments has no pair and is refused."""
    check_number("swap_fraction", swap_fraction, low=0.0, high=1.0)
    pairs = []
    for index, doc in enumerate(documents):
        segments = [list(map(int, segment)) for segment in doc if len(segment)]
        if len(segments) < 2:
            raise DataError(f"document {index + 1} has {len(segments)} segment(s): sentence-order prediction needs "
                            "two consecutive segments of one document",
                            "train SOP on documents of several sentences (e.g. wikitext-2 paragraphs, not one "
                            "sentence per line), or leave SOP out")
        for a, b in zip(segments, segments[1:], strict=False):
            if float(torch.rand((), generator=generator)) < swap_fraction:
                pairs.append((b, a, SWAPPED))
            else:
                pairs.append((a, b, IN_ORDER))
    return pairs


def pack_sentence_pair(a: Sequence[int], b: Sequence[int], *, cls_id: int, sep_id: int,
                       max_length: int | None = None) -> tuple[list[int], list[int]]:
    """``[CLS] a [SEP] b [SEP]`` with segment ids 0…0 1…1; trims the longer side's end to fit."""
    a, b = list(a), list(b)
    if max_length is not None:
        check_number("max_length", max_length, low=3, integer=True)
        while len(a) + len(b) + 3 > max_length:
            if len(a) >= len(b):
                a.pop()
            else:
                b.pop()
    input_ids = [cls_id, *a, sep_id, *b, sep_id]
    segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return input_ids, segments


# ---------------------------------------------------------------- T5 span corruption


def _random_segmentation(num_items: int, num_segments: int, generator) -> torch.Tensor:
    """Lengths of a uniformly random split of ``num_items`` into ``num_segments`` non-empty parts."""
    boundary = torch.arange(num_items - 1) < (num_segments - 1)
    boundary = boundary[torch.randperm(num_items - 1, generator=generator)]
    first_in_segment = torch.cat([torch.zeros(1, dtype=torch.long), boundary.long()])
    return torch.bincount(torch.cumsum(first_in_segment, 0), minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """T5's ``random_spans_noise_mask``: a bool mask of ``length`` with ``round(length * density)``
    noise tokens in ``round(noise / mean_span_length)`` spans, starting with a non-noise span.

    Where T5 would fail (more spans than non-noise tokens) the span count is capped instead.
    """
    check_number("length", length, low=2, integer=True)
    check_number("noise_density", noise_density, low=0.0, high=1.0, low_inclusive=False,
                 high_inclusive=False)
    check_number("mean_span_length", mean_span_length, low=1.0)
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    num_keep = length - num_noise
    num_spans = min(num_spans, num_noise, num_keep)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    keep_lengths = _random_segmentation(num_keep, num_spans, generator)
    interleaved = torch.stack([keep_lengths, noise_lengths], dim=1).reshape(-1)
    span_starts = torch.cumsum(interleaved, 0)[:-1]
    start_indicator = torch.zeros(length, dtype=torch.long)
    start_indicator[span_starts] = 1
    return torch.cumsum(start_indicator, 0) % 2 == 1


def _spans_to_sentinels(ids: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Replace each maximal run of ``mask`` by one sentinel: vocab_size-1, vocab_size-2, …"""
    previous = torch.cat([torch.zeros(1, dtype=torch.bool), mask[:-1]])
    first = mask & ~previous
    sentinel = vocab_size - torch.cumsum(first.long(), 0)
    return torch.where(first, sentinel, ids)[~mask | first]


def span_corruption(ids, *, vocab_size: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                    eos_id: int | None = None, noise_mask=None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's span corruption of one sequence: returns ``(inputs, targets)``.

    Each noise span becomes one sentinel in the inputs (the k-th span gets ``vocab_size-1-k``,
    as T5's ``<extra_id_k>``); the targets are the noise spans, each behind its sentinel.
    ``eos_id``, if given, ends both. ``noise_mask`` overrides the random mask.
    """
    ids = _as_1d(ids)
    mask = (random_spans_noise_mask(len(ids), noise_density, mean_span_length, generator)
            if noise_mask is None else torch.as_tensor(noise_mask, dtype=torch.bool))
    if mask.shape != ids.shape:
        raise InputError(f"noise_mask has shape {tuple(mask.shape)} but ids have {tuple(ids.shape)}",
                         "give one flag per token")
    inputs = _spans_to_sentinels(ids, mask, vocab_size)
    targets = _spans_to_sentinels(ids, ~mask, vocab_size)
    if eos_id is not None:
        tail = torch.tensor([eos_id])
        inputs, targets = torch.cat([inputs, tail]), torch.cat([targets, tail])
    return inputs, targets


def span_corruption_lengths(inputs_length: int, noise_density: float = 0.15,
                            mean_span_length: float = 3.0) -> tuple[int, int]:
    """T5's ``compute_input_and_target_lengths``: how many raw tokens to corrupt so the inputs
    (kept tokens, one sentinel per span, EOS) fill ``inputs_length``; returns
    ``(tokens_length, targets_length)`` — 568 and 114 for T5's 512 at 0.15 / 3."""
    check_number("inputs_length", inputs_length, low=2, integer=True)

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = round(tokens_length * noise_density)
        num_spans = round(num_noise / mean_span_length)
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:   # T5's rule: keep targets ≤ inputs
        tokens_length, targets_length = tokens_length - 1, targets_length - 1
    return tokens_length, targets_length


def restore_span_corruption(inputs, targets, *, vocab_size: int, eos_id: int | None = None) -> torch.Tensor:
    """Undo ``span_corruption``: put each target span back where its sentinel stands.

    Sentinels are recognised as T5 writes them: ``vocab_size-1``, ``vocab_size-2``, … in order.
    """
    inputs, targets = _as_1d(inputs, "inputs").tolist(), _as_1d(targets, "targets").tolist()
    if eos_id is not None:
        inputs = inputs[:-1] if inputs and inputs[-1] == eos_id else inputs
        targets = targets[:-1] if targets and targets[-1] == eos_id else targets

    def split_at_sentinels(tokens: list[int]) -> list[list[int]]:
        """The runs of ordinary tokens between sentinels (empty runs included)."""
        runs: list[list[int]] = [[]]
        expected = vocab_size - 1
        for token in tokens:
            if token == expected:
                expected -= 1
                runs.append([])
            else:
                runs[-1].append(token)
        return runs

    input_runs = split_at_sentinels(inputs)
    target_runs = split_at_sentinels(targets)
    # inputs: kept_0 S kept_1 S ... ; targets: noise_0 S noise_1 S ... where noise_0 precedes
    # the first target sentinel only when the sequence began with noise
    noise_runs = target_runs[1:] if not target_runs[0] else target_runs
    if len(noise_runs) < len(input_runs) - 1:
        raise InputError("the inputs have more sentinels than the targets have spans",
                         "pass the inputs and targets of one span_corruption call")
    restored = list(input_runs[0])
    for noise, kept in zip(noise_runs, input_runs[1:], strict=False):
        restored += noise + kept
    return torch.tensor(restored, dtype=torch.long)


# ---------------------------------------------------------------- BART denoising


def token_deletion(ids, *, rate: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """BART's token deletion: each token is dropped with probability ``rate``."""
    ids = _as_1d(ids)
    check_number("rate", rate, low=0.0, high=1.0)
    return ids[torch.rand(ids.shape, generator=generator) >= rate]


def text_infilling(ids, *, mask_id: int, rate: float = 0.3, poisson_lambda: float = 3.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """BART's text infilling: ``ceil(rate * n)`` tokens in spans of Poisson(λ) lengths, each span
    replaced by a single ``mask_id`` (a length-0 span inserts a mask).

    Spans never touch (a kept token separates them), so every mask stands for exactly one span.
    """
    ids = _as_1d(ids)
    check_number("rate", rate, low=0.0, high=1.0)
    check_number("poisson_lambda", poisson_lambda, low=0.0, low_inclusive=False)
    n = len(ids)
    num_to_mask = math.ceil(rate * n)
    if n == 0 or num_to_mask == 0:
        return ids.clone()
    lengths: list[int] = []
    total = 0
    while total < num_to_mask:
        draws = torch.poisson(torch.full((max(8, num_to_mask),), float(poisson_lambda)), generator=generator)
        for length in draws.long().tolist():
            length = min(length, num_to_mask - total)
            lengths.append(length)
            total += length
            if total >= num_to_mask:
                break
    num_keep = n - num_to_mask
    if len(lengths) > num_keep + 1:              # too many spans to keep apart: merge the tail
        lengths = lengths[:num_keep] + [sum(lengths[num_keep:])]
    slots = torch.randperm(num_keep + 1, generator=generator)[:len(lengths)].sort().values.tolist()
    tokens = ids.tolist()
    out: list[int] = []
    position = kept = 0
    for slot, length in zip(slots, lengths, strict=True):
        out += tokens[position:position + slot - kept]
        position += slot - kept
        kept = slot
        out.append(mask_id)
        position += length
    out += tokens[position:]
    return torch.tensor(out, dtype=torch.long)


def sentence_permutation(ids, *, sentence_ends, generator: torch.Generator | None = None) -> torch.Tensor:
    """BART's sentence permutation: split after each True in ``sentence_ends`` and shuffle the
    sentences (a trailing unfinished sentence counts as one)."""
    ids = _as_1d(ids)
    ends = torch.as_tensor(sentence_ends, dtype=torch.bool)
    if ends.shape != ids.shape:
        raise InputError(f"sentence_ends has shape {tuple(ends.shape)} but ids have {tuple(ids.shape)}",
                         "give one flag per token, True on the last token of each sentence "
                         "(for example ids == full_stop_id)")
    cuts = (torch.nonzero(ends).flatten() + 1).tolist()
    bounds = [0, *[c for c in cuts if c < len(ids)], len(ids)]
    sentences = [ids[s:e] for s, e in zip(bounds, bounds[1:], strict=False) if e > s]
    if not sentences:
        return ids.clone()
    order = torch.randperm(len(sentences), generator=generator).tolist()
    return torch.cat([sentences[i] for i in order])


def document_rotation(ids, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """BART's document rotation: start the sequence at a uniformly chosen token."""
    ids = _as_1d(ids)
    if len(ids) == 0:
        return ids.clone()
    start = int(torch.randint(len(ids), (), generator=generator))
    return torch.cat([ids[start:], ids[:start]])


# ---------------------------------------------------------------- ELECTRA


def replaced_token_detection(ids, masked, samples, *,
                             special_ids: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """ELECTRA's discriminator data: returns ``(inputs, labels)``.

    The generator's ``samples`` replace the ``masked`` positions (``samples`` has the shape of
    ``ids``, or one id per masked position in row-major order); a label is 1 where the token
    now differs from the original — a sample equal to the original counts as original (0) —
    and -100 on special tokens.
    """
    ids = _as_ids(ids)
    masked = torch.as_tensor(masked, dtype=torch.bool)
    samples = _as_ids(samples, "samples")
    if masked.shape != ids.shape:
        raise InputError(f"masked has shape {tuple(masked.shape)} but ids have {tuple(ids.shape)}",
                         "give one flag per token")
    inputs = ids.clone()
    if samples.shape == ids.shape:
        inputs[masked] = samples[masked]
    elif samples.dim() == 1 and samples.numel() == int(masked.sum()):
        inputs[masked] = samples
    else:
        raise InputError(f"samples has shape {tuple(samples.shape)}; expected {tuple(ids.shape)} or "
                         f"({int(masked.sum())},)", "give one sample per masked position")
    labels = (inputs != ids).long()
    labels[_special_mask(ids, special_ids)] = IGNORE_INDEX
    return inputs, labels
