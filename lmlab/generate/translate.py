"""Translation with an encoder–decoder (the transformer presets or the attentional RNN): sources
encoded once, then greedy decoding of a whole batch at a time, or beam search per sentence through
the LM protocol (``bind``) with length-normalised scores (score / length^α, ``length_penalty`` α).

Sources are encoded as in ``lmlab pretrain --objective seq2seq``: the tokenizer's ids cut to the
model's context, ending in EOS; the decoder starts from BOS (PAD when there is none).
``alignment`` reads the model's attention from each output token to the source tokens (the RNN's
attention, or the transformer's cross-attention averaged over heads) and ``plot_alignment`` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.errors import ConfigError, MissingDependencyError
from ..core.io import atomic_path
from ..core.progress import progress
from ..core.validate import check_number
from ..data.loaders import pad_batch
from ..data.parallel import language_tag
from .beam import beam_search


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


@torch.no_grad()
def greedy_batch(model, sources: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding of every source at once; each row stops at EOS (not included)."""
    src, mask = pad_batch(sources, model.pad_id if model.pad_id is not None else 0)
    state = model.start(src, mask.long())
    b = len(sources)
    ids = torch.full((b, 1), decoder_start(model), dtype=torch.long, device=model.device)
    out = torch.zeros(b, 0, dtype=torch.long, device=model.device)
    done = torch.zeros(b, dtype=torch.bool, device=model.device)
    eos = model.eos_id
    for _ in range(max_new_tokens):
        logits, state = model(ids, state)
        ids = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, ids], 1)
        if eos is not None:
            done |= ids[:, 0] == eos
            if bool(done.all()):
                break
    rows = []
    for row in out.tolist():
        rows.append(row[:row.index(eos)] if eos is not None and eos in row else row)
    return rows


def translate(model, tokenizer, texts: Sequence[str], *, beam_size: int = 1, max_new_tokens: int | None = None,
              batch_size: int = 64, length_penalty: float = 1.0, target_language: str | None = None,
              source_tokenizer=None) -> list[str]:
    """Translations of ``texts``: greedy (``beam_size`` 1, batched) or beam search per sentence;
    ``source_tokenizer`` reads the sources of a model trained with separate vocabularies.
    ``target_language`` asks a multilingual model (``lmlab.data.parallel.both_directions``) for that
    language by putting its tag before every source; the tokenizer must know the tag."""
    check_number("beam_size", beam_size, low=1, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    if target_language is not None:
        tag = language_tag(target_language)
        if (source_tokenizer or tokenizer).token_to_id(tag) is None:
            raise ConfigError(f"the model's tokenizer has no {tag} token: it was not trained to translate "
                              "into several languages", "leave --target-language out")
        texts = [f"{tag} {t}" for t in texts]
    model.eval()
    limit = max_new_tokens or model.context_length
    sources = encode_sources(model, source_tokenizer or tokenizer, texts)
    results: list[list[int]] = []
    if beam_size == 1:
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))  # little padding per batch
        by_index: dict[int, list[int]] = {}
        for k in progress(range(0, len(order), batch_size), desc="translating", unit="batch"):
            chunk = order[k:k + batch_size]
            for i, ids in zip(chunk, greedy_batch(model, [sources[i] for i in chunk], limit), strict=True):
                by_index[i] = ids
        results = [by_index[i] for i in range(len(sources))]
    else:
        start = decoder_start(model)
        for src in progress(sources, desc="translating", unit="sentence"):
            model.bind(torch.tensor(src))
            results.append(beam_search(model, [start], beam_size=beam_size,
                                       max_new_tokens=min(limit, model.context_length - 1),
                                       length_penalty=length_penalty)[0].ids)
        model.source = None
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in results]


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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "the attention plot") from None
    if not str(path).lower().endswith(".png"):
        raise ConfigError(f"attention plot path {path!r} does not end in .png", "name a .png file")
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
