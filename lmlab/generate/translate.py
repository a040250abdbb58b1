"""Translation with an encoder–decoder (the transformer presets or the attentional RNN): a batch of
sources bound to the model (``bind``) and decoded through the one decoding loop (``Engine``) —
greedily, a whole batch at a time, or by beam search with length-normalised scores
(score / length^α, ``length_penalty`` α).

Sources are encoded as in ``lmlab pretrain --objective seq2seq``: the tokenizer's ids cut to the
model's context, ending in EOS; the decoder starts from BOS (PAD when there is none).
``alignment`` reads the model's attention from each output token to the source tokens (the RNN's
attention, or the transformer's cross-attention averaged over heads) and ``plot_alignment`` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import ConfigError
from ..core.io import atomic_path
from ..core.plotting import check_png, pyplot
from ..core.progress import progress
from ..core.validate import check_number
from ..data.loaders import pad_batch
from ..data.parallel import language_tag
from .engine import Engine, Request
from .settings import DecodingSettings


def encode_sources(model, tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Source ids as in training: cut to the context, ending in EOS."""
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    keep = model.context_length - len(eos)
    return [tokenizer.encode(t)[:keep] + eos for t in texts]


def decoder_start(model) -> int:
    """The id the decoder reads first: BOS, else PAD."""
    start = model.bos_id if model.bos_id is not None else model.pad_id
    if start is None:
        raise ConfigError("the model has neither a BOS nor a PAD id to start decoding from",
                          "train it with a tokenizer that has <s> or <pad>")
    return int(start)


def translate(model, tokenizer, texts: Sequence[str], *, beam_size: int = 1, max_new_tokens: int | None = None,
              batch_size: int = 64, length_penalty: float = 1.0, target_language: str | None = None,
              source_tokenizer=None) -> list[str]:
    """Translations of ``texts``, greedy (``beam_size`` 1) or by beam search, at most ``max_new_tokens``
    tokens each (default and ceiling: the model's context less the start token).

    Sources are sorted by length and bound ``batch_size`` at a time (padded, under a mask); each
    batch decodes through the one decoding loop (``Engine``), request *i* on source *i* (the
    encoder–decoder's ``prefill``), the rows of finished sentences dropping out. Beam search
    decodes one sentence at a time (its rows are the beams). ``source_tokenizer`` reads the sources
    of a model trained with separate vocabularies. ``target_language`` asks a multilingual model
    (``lmlab.data.parallel.both_directions``) for that language by putting its tag before every
    source; the tokenizer must know the tag."""
    check_number("beam_size", beam_size, low=1, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    check_number("length_penalty", length_penalty)
    if max_new_tokens is not None:
        check_number("max_new_tokens", max_new_tokens, low=1, integer=True)
    if target_language is not None:
        tag = language_tag(target_language)
        if (source_tokenizer or tokenizer).token_to_id(tag) is None:
            raise ConfigError(f"the model's tokenizer has no {tag} token: it was not trained to translate "
                              "into several languages", "leave --target-language out")
        texts = [f"{tag} {t}" for t in texts]
    model.eval()
    limit = model.context_length - 1 if max_new_tokens is None else min(max_new_tokens, model.context_length - 1)
    if beam_size == 1:
        settings = DecodingSettings(greedy=True, max_new_tokens=limit)
    else:
        settings = DecodingSettings(beam_size=beam_size, max_new_tokens=limit, length_penalty=length_penalty)
        batch_size = 1
    engine = Engine(model, settings=settings, decode_layout=False)
    sources = encode_sources(model, source_tokenizer or tokenizer, texts)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # little padding per batch
    start, pad = decoder_start(model), model.pad_id if model.pad_id is not None else 0
    results: dict[int, list[int]] = {}
    try:
        for k in progress(range(0, len(order), batch_size), desc="translating",
                          unit="batch" if batch_size > 1 else "sentence"):
            chunk = order[k:k + batch_size]
            ids, mask = pad_batch([sources[i] for i in chunk], pad)
            model.bind(ids, mask.long())
            for i, done in zip(chunk, engine.generate([Request([start]) for _ in chunk]), strict=True):
                results[i] = done.ids
    finally:
        model.source = None
    return [tokenizer.decode(results[i], skip_special_tokens=True) for i in range(len(sources))]


@torch.no_grad()
def alignment(model, tokenizer, source: str, translation: str, *, layer: int = -1,
              source_tokenizer=None) -> tuple[torch.Tensor, list[str], list[str]]:
    """(weights [T, S], source pieces, target pieces): how much each output token (EOS included)
    attends to each source token while it is predicted. ``layer`` picks the transformer's layer."""
    reader = source_tokenizer or tokenizer
    src = encode_sources(model, reader, [source])[0]
    out = tokenizer.encode(translation)[:model.context_length - 1]
    out += [] if model.eos_id is None else [model.eos_id]
    weights = model.cross_attention(torch.tensor([src]), torch.tensor([[decoder_start(model), *out[:-1]]]))
    pieces = [reader.id_to_token(i) for i in src], [tokenizer.id_to_token(i) for i in out]
    return weights[layer].mean(0).float().cpu(), *pieces


def plot_alignment(weights: torch.Tensor, source: Sequence[str], target: Sequence[str], path, *,
                   title: str = "attention", axes: tuple[str, str] = ("source", "output")) -> str:
    """Save a PNG heat map of ``weights`` [T, S]: output tokens down, source tokens across
    (``axes`` names the two: across, down)."""
    plt = pyplot("the attention plot")
    check_png(path, "attention plot")
    rows, cols = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * cols + 1.5), max(3.0, 0.35 * rows + 1.2)), dpi=100)
    ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), list(source), rotation=90, fontsize=8)
    ax.set_yticks(range(rows), list(target), fontsize=8)
    ax.set(xlabel=axes[0], ylabel=axes[1], title=title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return str(path)
