"""``pretrain``: text + tokenizer → token shards → a trained model directory, in one call.

This is the library function behind ``lmlab pretrain`` (and the quickstart): it works with
any tokenizer. A run directory holds ``run.json`` (every setting, so ``resume`` needs only the
directory), ``data/`` (token shards), ``checkpoints/``, ``metrics.jsonl``, ``metrics.png``
and, at the end, ``model/`` — a model directory that ``lmlab eval perplexity`` and
``lmlab generate`` read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ConfigError, DataError, InputError
from ..core.io import write_json
from ..core.progress import progress
from ..core.validate import check_choice, check_keys
from ..data.loaders import ContiguousStream, RandomWindows
from ..data.parallel import PairBatches, aligned_lines, as_tensors, from_tensors
from ..data.shards import HEADER_FILE, TokenShards, write_shards
from ..models.config import (
    ALL_PRESETS,
    ENCODER_PRESETS,
    PRESETS,
    SEQ2SEQ_PRESETS,
    TransformerConfig,
)
from ..models.directory import save_model_dir
from ..models.feedforward import FeedForwardLM
from ..models.recurrent import RecurrentLM
from ..models.rnn_seq2seq import RNNEncoderDecoder
from ..models.seq2seq import EncoderDecoder
from ..models.transformer import TransformerLM
from .denoising import (
    Electra,
    ElectraModel,
    MaskedLM,
    MaskedLMWithNsp,
    MaskedLMWithSop,
    NspModel,
    mask_token_id,
    word_starts,
)
from .objectives import BidirectionalLM, CausalLM, ScheduledSampling
from .seq2seq_objectives import Denoising, Seq2SeqLM, SpanCorruption, num_sentinels
from .streams import stream_loss
from .trainer import TrainConfig, TrainResult, train

TRANSFORMERS = (*PRESETS, *ENCODER_PRESETS, *SEQ2SEQ_PRESETS)
RNN_SEQ2SEQ = "rnn-seq2seq"  # lmlab.models.rnn_seq2seq: attention (Bahdanau / Luong) and copying
ENCODER_DECODERS = (*SEQ2SEQ_PRESETS, RNN_SEQ2SEQ)
#: recurrent presets: ELMo's biLM (Peters et al., 2018) is an LSTM with both directions and a tied softmax
RECURRENT_PRESETS = {"elmo": dict(cell="lstm", bidirectional=True, tie_embeddings=True)}
RECURRENT = ("lstm", "gru", "rnn", *RECURRENT_PRESETS)
FAMILIES = (*TRANSFORMERS, *RECURRENT, "feedforward", RNN_SEQ2SEQ)
OBJECTIVES_BY_NAME = ("causal", "mlm", "electra", "span", "denoise", "seq2seq", "bilm")
RUN_FILE = "run.json"
SOURCE_DIR = "source"  # where a separate source-side tokenizer.json is kept (run and model directory)


@dataclass
class PretrainResult:
    """The trained model, where it was saved, and the training summary."""

    model: Any
    model_dir: Path
    train: TrainResult
    valid_loss: float | None


def build_model(family: str, settings: dict[str, Any], tokenizer, extra_tokens: int = 0) -> Any:
    """A fresh model of ``family`` (a transformer preset, lstm/gru/rnn/elmo, or feedforward) for ``tokenizer``
    (plus ``extra_tokens`` ids after its vocabulary, e.g. an appended [MASK])."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}", f"choose one of: {', '.join(FAMILIES)}")
    settings = dict(settings)
    vocab = tokenizer.vocab_size + extra_tokens
    _check_settings(family, settings)
    if family in SEQ2SEQ_PRESETS:
        model = EncoderDecoder(TransformerConfig.from_preset(family, vocab_size=vocab, **settings))
    elif family in TRANSFORMERS:
        model = TransformerLM(TransformerConfig.from_preset(family, vocab_size=vocab, **settings))
    elif family == RNN_SEQ2SEQ:
        model = RNNEncoderDecoder(vocab, **settings)
    elif family == "feedforward":
        model = FeedForwardLM(vocab, **settings)
    else:
        model = RecurrentLM(vocab, **{**RECURRENT_PRESETS.get(family, {"cell": family}), **settings})
    model.set_special_ids({"bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
                           "pad_id": tokenizer.pad_id, "unk_id": tokenizer.unk_id})
    return model


def _check_settings(family: str, settings: dict[str, Any]) -> None:
    """Reject settings the family does not have, naming the ones it does."""
    import inspect
    from dataclasses import fields

    if family in TRANSFORMERS:
        known = {f.name for f in fields(TransformerConfig)} - {"vocab_size"}
    else:
        cls = {"feedforward": FeedForwardLM, RNN_SEQ2SEQ: RNNEncoderDecoder}.get(family, RecurrentLM)
        known = {n for n, p in inspect.signature(cls).parameters.items() if p.kind is p.KEYWORD_ONLY}
        known -= {"cell"} if cls is RecurrentLM else set()
    check_keys(f"setting(s) of the {family} family", settings, known)


def cached_shards(corpus, tokenizer, path: Path) -> TokenShards | None:
    """The shards of ``corpus`` in ``path``, tokenized once: a resumed run (or another run of a scaling
    grid) reuses them while the tokenizer is the same; None when there are none and no ``corpus``."""
    if (path / HEADER_FILE).exists():
        shards = TokenShards(path)
        if shards.header["tokenizer"]["fingerprint"] == tokenizer.fingerprint():
            return shards
    if corpus is None:
        return None
    return write_shards(corpus, tokenizer, path)


def _pairs(corpora, tokenizer, path: Path, max_length: int,
           source_tokenizer=None) -> list[tuple[list[int], list[int]]] | None:
    """The run's tokenised (source, target) pairs of ``corpora`` (two line-aligned corpora), each side
    cut to ``max_length`` ids ending in EOS (sources by ``source_tokenizer`` when there is one); saved
    once in ``path`` (a resumed run reuses them)."""
    from safetensors.torch import load_file, save_file

    from ..core.io import atomic_path

    reader = source_tokenizer or tokenizer
    fingerprint = f"{tokenizer.fingerprint()}:{max_length}"
    if source_tokenizer is not None:
        fingerprint += f":{source_tokenizer.fingerprint()}"
    if path.exists():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            if (fh.metadata() or {}).get("tokenizer") == fingerprint:
                return from_tensors(load_file(str(path)))
    if corpora is None:
        return None
    sources, targets = aligned_lines(corpora)
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    src_eos = [] if reader.eos_id is None else [reader.eos_id]
    keep = max_length - len(eos)
    pairs = [(reader.encode(src)[:max_length - len(src_eos)] + src_eos, tokenizer.encode(tgt)[:keep] + eos)
             for src, tgt in progress(zip(sources, targets, strict=True), desc="tokenizing pairs",
                                      total=len(sources), unit="pair")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(as_tensors(pairs), str(tmp), metadata={"tokenizer": fingerprint})
    return pairs


def pretrain(family: str, corpus, tokenizer, run_dir: str | os.PathLike, *, model: dict | None = None,
             training: TrainConfig | dict | None = None, valid=None, batch_size: int = 12, context: int = 64,
             eval_batches: int = 20, scheduled_sampling: float = 0.0, label_smoothing: float = 0.0,
             objective: str = "causal", mask_rate: float = 0.15, whole_word: bool = False,
             nsp: bool = False, sop: bool = False, resume: bool = False,
             monitor: Callable[[Any], dict[str, float]] | None = None,
             source_tokenizer=None) -> PretrainResult:
    """Train a ``family`` model (``model`` = its settings, e.g. d_model, n_layers) on ``corpus``.

    Transformers see random windows of ``context`` tokens; recurrent and feed-forward models
    read ``batch_size`` contiguous streams ``context`` tokens at a time with their state
    carried (truncated BPTT). ``valid`` (a corpus) gives periodic validation loss.
    ``objective`` is ``causal`` (next token), ``mlm`` (BERT's masked LM, ``mask_rate`` of the
    tokens, ``whole_word`` masking; ``nsp`` adds BERT's next-sentence prediction on [CLS] A [SEP] B [SEP]
    pairs cut from the windows; ``sop`` instead adds ALBERT's sentence-order prediction: two consecutive
    segments cut at a sentence end, swapped half of the time) or ``electra`` (replaced-token detection) — these two make
    the transformer bidirectional and append a [MASK] id when the tokenizer has none — or, for
    the t5/bart encoder–decoders, ``span`` (T5 span corruption of ``mask_rate``, sentinel ids
    appended), ``denoise`` (BART text infilling of 2·``mask_rate`` plus sentence permutation) or
    ``seq2seq`` (translation: ``corpus``/``valid`` are (source, target) line-aligned corpora, each
    side cut to ``context`` tokens ending in EOS, batched by length, teacher-forced cross-entropy).
    ``bilm`` trains ELMo's biLM (``--family lstm``; bidirectional, on random windows): the forward and backward
    LMs' losses summed. ``monitor(model)`` (with ``valid``) gives more figures to log at every evaluation — e.g. validation
    BLEU from a caller in a higher layer; they land in ``metrics.jsonl`` beside ``eval_loss``.
    ``source_tokenizer`` (translation with ``rnn-seq2seq``) gives the source side its own vocabulary
    and embedding; it is saved in ``source/`` of the run and of the model directory.
    """
    run = Path(run_dir)
    train_config = training if isinstance(training, TrainConfig) else TrainConfig.from_dict(training or {})
    settings = dict(model or {})
    check_choice("objective", objective, OBJECTIVES_BY_NAME)
    if (family in TRANSFORMERS or family == RNN_SEQ2SEQ) and "context_length" not in settings:
        settings["context_length"] = context
    learned = family in TRANSFORMERS and settings.get("positions", ALL_PRESETS[family]["positions"]) == "learned"
    if learned and settings["context_length"] < context:
        raise ConfigError(f"training windows of {context} tokens are longer than the {settings['context_length']} "
                          "positions the model learns (context_length)",
                          f"use --context {settings['context_length']} or less, or a larger --context-length")
    masking = objective in ("mlm", "electra")
    if (nsp or sop) and objective != "mlm":
        name = "next-sentence" if nsp else "sentence-order"
        raise ConfigError(f"{name} prediction is trained with the masked LM",
                          f"use --objective mlm with --{'nsp' if nsp else 'sop'}")
    if nsp and sop:
        raise ConfigError("--nsp and --sop are two heads for the same [CLS] pair", "choose one (ALBERT: --sop)")
    if masking:
        if family not in TRANSFORMERS:
            raise ConfigError(f"the {objective} objective needs a transformer", "use --family bert")
        settings.setdefault("causal", False)
    if objective == "bilm":  # ELMo: a forward and a backward LSTM LM in one model
        if family not in RECURRENT:
            raise ConfigError(f"the bilm objective trains a bidirectional recurrent LM, not a {family} model",
                              "use --family elmo (or lstm, gru, rnn)")
        if not settings.setdefault("bidirectional", True):
            raise ConfigError("the bilm objective needs both directions", "leave --bidirectional out (or true)")
    elif settings.get("bidirectional", family in RECURRENT_PRESETS):
        raise ConfigError(f"a bidirectional recurrent LM ({family}) is trained with both directions' losses",
                          "add --objective bilm")
    seq2seq = objective in ("span", "denoise", "seq2seq")
    translation = objective == "seq2seq"  # paired data: ``corpus`` and ``valid`` are (source, target) corpora
    if seq2seq != (family in ENCODER_DECODERS):
        raise ConfigError(f"the {objective} objective does not train a {family} model",
                          "use --family t5, bart or rnn-seq2seq with --objective span, denoise or seq2seq")
    mask_id = mask_token_id(tokenizer) if masking or objective == "denoise" else None
    extra = 1 if (masking or objective == "denoise") and mask_id is None else 0
    if objective == "span":
        extra = num_sentinels(context)
    if source_tokenizer is None and settings.get("source_vocab_size") is not None:
        raise ConfigError("source_vocab_size comes from a separate source tokenizer, and none was given",
                          "pass the source tokenizer (--source-tokenizer; a resumed run finds it in RUN/source)")
    if source_tokenizer is not None:
        if not translation or family != RNN_SEQ2SEQ:
            raise ConfigError("a separate source tokenizer is for translation with the RNN encoder–decoder",
                              "use --family rnn-seq2seq --objective seq2seq, or one shared tokenizer")
        settings["source_vocab_size"] = source_tokenizer.vocab_size
    torch.manual_seed(train_config.seed)  # the same settings always start from the same weights
    model_obj = build_model(family, settings, tokenizer, extra_tokens=extra)
    recurrent = family not in TRANSFORMERS and family != RNN_SEQ2SEQ  # read as carried streams
    recurrent = recurrent or bool(getattr(getattr(model_obj, "config", None), "memory_length", 0))  # Transformer-XL
    recurrent = recurrent and objective != "bilm"  # the backward LM cannot carry its state forward: windows
    if scheduled_sampling and objective != "causal":
        raise ConfigError(f"scheduled sampling is for the causal objective, not {objective}",
                          "leave --scheduled-sampling out")
    if scheduled_sampling and family not in RECURRENT:
        raise ConfigError("scheduled sampling is for recurrent models", "use --family lstm, gru or rnn")
    if resume and (run / RUN_FILE).exists() and read_run(run)["tokenizer"] != tokenizer.fingerprint():
        raise ConfigError(f"{run} was trained with another tokenizer", "resume with the run's own tokenizer.json")
    write_json(run / RUN_FILE, {"family": family, "model": settings, "training": asdict(train_config),
                                "batch_size": batch_size, "context": context, "eval_batches": eval_batches,
                                "scheduled_sampling": scheduled_sampling, "label_smoothing": label_smoothing,
                                "objective": objective, "mask_rate": mask_rate, "whole_word": whole_word, "nsp": nsp, "sop": sop,
                                "tokenizer": tokenizer.fingerprint()})
    tokenizer.save(run)
    if source_tokenizer is not None:
        source_tokenizer.save(run / SOURCE_DIR)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    if translation:
        train_tokens = _pairs(corpus, tokenizer, run / "data" / "train_pairs.safetensors", context, source_tokenizer)
        valid_tokens = _pairs(valid, tokenizer, run / "data" / "valid_pairs.safetensors", context, source_tokenizer)
    else:
        train_tokens = cached_shards(corpus, tokenizer, run / "data" / "train")
        valid_tokens = cached_shards(valid, tokenizer, run / "data" / "valid")
    if train_tokens is None:
        raise ConfigError("no training corpus", "pass the training corpus (a resumed run reuses its shards)")
    if translation:
        source = PairBatches(train_tokens, batch_size, pad, seed=train_config.seed)
    elif recurrent:
        source = ContiguousStream(train_tokens, batch_size, context)
    else:
        source = RandomWindows(train_tokens, batch_size, context, seed=train_config.seed)
    if scheduled_sampling:
        loss_fn = ScheduledSampling(scheduled_sampling, ramp_steps=train_config.steps,
                                      label_smoothing=label_smoothing, carry_state=True)
    elif masking:
        options = dict(rate=mask_rate, special_ids=sorted(tokenizer.special_ids), seed=train_config.seed,
                       word_starts=word_starts(tokenizer, extra) if whole_word else None)
        mask_id = tokenizer.vocab_size if mask_id is None else mask_id
        if nsp or sop:
            cls_id = _first_id(tokenizer, "[CLS]", tokenizer.bos_id)
            sep_id = _first_id(tokenizer, "[SEP]", tokenizer.eos_id)
            pair_options = dict(cls_id=cls_id, sep_id=sep_id, pad_id=pad, **options)
            if sop:
                ends = sentence_end_ids(tokenizer)
                check_segments(train_tokens, ends, tokenizer.eos_id)
                loss_fn = MaskedLMWithSop(mask_id, model_obj.vocab_size, sentence_end_ids=ends, **pair_options)
            else:
                loss_fn = MaskedLMWithNsp(mask_id, model_obj.vocab_size, **pair_options)
        else:
            loss_fn = (MaskedLM if objective == "mlm" else Electra)(mask_id, model_obj.vocab_size, **options)
    elif seq2seq:
        start = tokenizer.bos_id if tokenizer.bos_id is not None else pad
        if translation:
            loss_fn = Seq2SeqLM(start, label_smoothing)
        elif objective == "span":
            loss_fn = SpanCorruption(model_obj.vocab_size, start_id=start, pad_id=pad, eos_id=tokenizer.eos_id,
                                     noise_density=mask_rate, seed=train_config.seed)
        else:
            loss_fn = Denoising(tokenizer.vocab_size if mask_id is None else mask_id, start_id=start, pad_id=pad,
                                rate=2 * mask_rate, sentence_end_id=tokenizer.token_to_id("."),
                                seed=train_config.seed)
    elif objective == "bilm":
        loss_fn = BidirectionalLM()
    else:
        loss_fn = CausalLM(label_smoothing, carry_state=recurrent)
    trained = ElectraModel(model_obj) if objective == "electra" else NspModel(model_obj) if nsp or sop else model_obj
    eval_fn = None
    if valid_tokens is not None and translation:
        valid_batches = PairBatches(valid_tokens, batch_size, pad).all_batches()[:eval_batches]

        def eval_fn(engine):  # teacher-forced cross-entropy per target token on the first validation pairs
            total, count = 0.0, 0
            for b in valid_batches:
                loss, n = loss_fn(trained, {k: v.to(model_obj.device) for k, v in b.items()})
                total, count = total + float(loss) * n, count + n
            return total / max(count, 1)
    elif valid_tokens is not None and objective != "causal":
        windows = RandomWindows(valid_tokens, batch_size, context, seed=train_config.seed + 1)

        def eval_fn(engine):  # the objective's own loss on fixed validation noise
            losses = [float(loss_fn(trained, {"input": windows.batch(i)["input"].to(model_obj.device),
                                              "step": 10**9 + i})[0]) for i in range(eval_batches)]
            return sum(losses) / len(losses)
    elif valid_tokens is not None:
        if recurrent:
            def eval_fn(engine):
                return stream_loss(model_obj, valid_tokens, context=context, batch_size=batch_size)
        else:
            windows = RandomWindows(valid_tokens, batch_size, context, seed=train_config.seed + 1)

            def eval_fn(engine):
                losses = []
                for i in range(eval_batches):
                    b = windows.batch(i)
                    logits, _ = engine(b["input"].to(model_obj.device), None)
                    losses.append(float(torch.nn.functional.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]).float(), b["target"].to(model_obj.device).reshape(-1))))
                return sum(losses) / len(losses)
    if monitor is not None and eval_fn is not None:
        eval_fn = _monitored(eval_fn, monitor, model_obj)
    result = train(trained, loss_fn, source, train_config, run, eval_fn=eval_fn, resume=resume)
    model_obj.eval()
    model_dir = run / "model"
    state = (result.final_state if trained is model_obj else None) or model_obj.to_state()
    if int(os.environ.get("RANK", "0")) == 0:
        save_model_dir(model_dir, *state, tokenizer=tokenizer)
        if source_tokenizer is not None:
            source_tokenizer.save(model_dir / SOURCE_DIR)
    valid_loss = result.eval_losses[-1][1] if result.eval_losses else None
    return PretrainResult(model=model_obj, model_dir=model_dir, train=result, valid_loss=valid_loss)


def _monitored(eval_fn: Callable, monitor: Callable, model: Any) -> Callable:
    """``eval_fn`` whose result also carries ``monitor(model)``'s figures (run in eval mode, no gradients)."""
    def evaluate(engine) -> dict[str, float]:
        return {"loss": float(eval_fn(engine)), **monitor(model)}
    return evaluate


SENTENCE_ENDS = (".", "!", "?")


def sentence_end_ids(tokenizer) -> list[int]:
    """The ids of the tokens that end a sentence (``.``, ``!``, ``?``) in the vocabulary."""
    found = [tokenizer.token_to_id(t) for t in SENTENCE_ENDS]
    return [i for i in found if i is not None]


def check_segments(tokens, sentence_ends: list[int], eos_id: int | None, sample: int = 1 << 21) -> None:
    """Refuse sentence-order prediction on a corpus whose documents (EOS-separated, in the first ``sample``
    tokens) are never two segments: no document there has a sentence end before its last token."""
    import numpy as np

    hint = "train SOP on documents of several sentences (e.g. wikitext-2 paragraphs), or leave --sop out"
    if not sentence_ends:
        raise ConfigError("sentence-order prediction cuts documents at sentence ends, and the tokenizer has no "
                          f"{', '.join(SENTENCE_ENDS)} token", hint)
    ids = np.asarray(tokens.read(0, min(len(tokens), sample)))
    is_end = np.isin(ids, sentence_ends)
    is_eos = ids == eos_id if eos_id is not None else np.zeros_like(is_end)
    doc = np.cumsum(is_eos) - is_eos  # the document each token belongs to (its EOS included)
    inner = is_end & np.r_[(doc[1:] == doc[:-1]) & ~is_eos[1:], False]  # a sentence end with text after it
    if not inner.any():
        raise DataError(f"every document of the training corpus is one segment (no sentence end inside any of "
                        f"{int(doc[-1]) + 1 if len(doc) else 0} documents): sentence-order prediction needs two "
                        "consecutive segments of a document", hint)


def _first_id(tokenizer, token: str, fallback: int | None) -> int:
    """The id of ``token`` ([CLS], [SEP]) in the vocabulary, else ``fallback`` (BOS, EOS)."""
    found = tokenizer.token_to_id(token)
    if found is None and fallback is None:
        raise ConfigError(f"next-sentence pairs need {token} or a BOS/EOS token, and the tokenizer has neither",
                          "use a tokenizer with special tokens (char/word have <s> and </s>)")
    return found if found is not None else fallback


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The settings a run was started with (its ``run.json``)."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise InputError(f"{run_dir} is not a pretraining run directory (no {RUN_FILE})",
                         "pass the --out directory of an earlier 'lmlab pretrain'")
    return json.loads(path.read_text(encoding="utf-8"))
