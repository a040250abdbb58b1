"""ELMo features for a tagger (Peters et al., 2018, §3.3): a pretrained biLM (``RecurrentLM`` with
``bidirectional=True``) is frozen, its layers are mixed by a ``ScalarMix`` whose weights the task
learns, and — as in the paper — the mix is concatenated with the task's own trainable word embedding
and fed to the task's BiLSTM and tag layer (``TaggerNet``, softmax or CRF).

For comparison the same tagger reads the trainable embedding alone (``random``: the baseline without
pretraining) or beside the biLM's token layer only (``static``: context-free pretrained vectors).
Pretrained features are layer-normalised (the biLM's layers differ in scale). Words are looked up in
the biLM's word-level vocabulary as written, else lower-cased, else title-cased (unknown → its UNK).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, DataError
from ..core.validate import check_choice, check_number
from ..data.loaders import pad_batch, shuffled_batch
from ..models.recurrent import RecurrentLM
from ..models.scalar_mix import ScalarMix
from ..train import TrainConfig, TrainResult, train
from .metrics import token_accuracy
from .networks import TaggerNet
from .tagger import tagging_loss

FEATURES = ("elmo", "static", "random")


class BiLMWordEncoder(nn.Module):
    """Words [B, W] → a frozen biLM's features (``features``: elmo / static / random) → task BiLSTM → [B, W, 2·d_task]."""

    def __init__(self, bilm: RecurrentLM, features: str = "elmo", *, d_word: int = 100, d_task: int = 64,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.features = check_choice("features", features, FEATURES)
        if not bilm.args.get("bidirectional"):
            raise ConfigError("ELMo features come from a bidirectional LM", "pretrain it with --objective bilm")
        check_number("d_word", d_word, low=1, integer=True)
        check_number("d_task", d_task, low=1, integer=True)
        self.bilm = bilm.requires_grad_(False).eval()
        width = 0 if features == "random" else 2 * bilm.args["d_hidden"]
        self.mix = ScalarMix(bilm.args["n_layers"] + 1, layer_norm=True) if features == "elmo" else None
        self.embed = nn.Embedding(bilm.vocab_size, d_word)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(d_word + width, d_task, batch_first=True, bidirectional=True)
        self.width = 2 * d_task

    def train(self, mode: bool = True) -> BiLMWordEncoder:
        super().train(mode)
        self.bilm.eval()  # frozen: no dropout in the pretrained layers
        return self

    def forward(self, batch: dict) -> torch.Tensor:
        ids, mask = batch["words"], batch["word_mask"]
        x = self.embed(ids)
        if self.features != "random":
            with torch.no_grad():
                layers = self.bilm.layer_states(ids, mask)
            pretrained = self.mix(layers) if self.mix is not None else F.layer_norm(layers[0], layers.shape[-1:])
            x = torch.cat([x, pretrained], dim=-1)
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        return out


class WordBatches:
    """(word ids, tag ids) sentences as padded tagger batches, reshuffled every pass with ``seed``."""

    def __init__(self, words: list[list[int]], tags: list[list[int]], batch_size: int, seed: int = 0) -> None:
        check_number("batch_size", batch_size, low=1, integer=True)
        if len(words) < batch_size:
            raise DataError(f"{len(words)} sentences are fewer than one batch of {batch_size}", "lower the batch size")
        self.words, self.tags, self.batch_size, self.seed = words, tags, batch_size, seed

    def rows(self, picked: Sequence[int]) -> dict[str, torch.Tensor]:
        words, mask = pad_batch([self.words[i] for i in picked], 0)
        tags, _ = pad_batch([self.tags[i] for i in picked], 0)
        return {"words": words, "word_mask": mask.long(), "tags": tags}

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        return self.rows(shuffled_batch(len(self.words), self.batch_size, index * world + rank, self.seed))


def word_ids(tokenizer: Any, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
    """Each word's id in the biLM's word-level vocabulary: as written, else lower-cased, else title-cased, else UNK."""
    if tokenizer.unk_id is None:
        raise ConfigError("the biLM's tokenizer has no UNK token for unseen words", "pretrain with --tokenizer word")
    def lookup(word: str) -> int:
        for form in (word, word.lower(), word.title()):
            found = tokenizer.token_to_id(form)
            if found is not None:
                return found
        return tokenizer.unk_id

    return [[lookup(w) for w in words] for words in sentences]


def fit_bilm_tagger(bilm: RecurrentLM, tokenizer: Any, sentences: Sequence[tuple[Sequence[str], Sequence[str]]],
                    features: str = "elmo", *, steps: int = 300, batch_size: int = 32, lr: float = 2e-3,
                    d_word: int = 100, d_task: int = 64, crf: bool = False, seed: int = 0, run_dir: str | os.PathLike | None = None
                    ) -> tuple[TaggerNet, list[str], TrainResult]:
    """Train a tagger on ``features`` of the frozen ``bilm`` (see the module docstring) for (words, tags)
    ``sentences`` through the one trainer; (network, tag names, trainer result)."""
    tags = sorted({t for _, ts in sentences for t in ts})
    index = {t: i for i, t in enumerate(tags)}
    torch.manual_seed(seed)
    net = TaggerNet(BiLMWordEncoder(bilm, features, d_word=d_word, d_task=d_task), len(tags), crf=crf)
    source = WordBatches(word_ids(tokenizer, [w for w, _ in sentences]), [[index[t] for t in ts] for _, ts in sentences],
                         batch_size, seed)
    config = TrainConfig(steps=steps, lr=lr, schedule="linear", warmup=steps // 10, weight_decay=0.0, clip=5.0,
                         log_every=max(1, steps // 20), seed=seed)

    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="lmlab-elmo-") as tmp:
            result = train(net, tagging_loss, source, config, tmp)
    else:
        result = train(net, tagging_loss, source, config, run_dir)
    net.eval()
    return net, tags, result


@torch.no_grad()
def bilm_tagger_accuracy(net: TaggerNet, tags: list[str], tokenizer: Any,
                         sentences: Sequence[tuple[Sequence[str], Sequence[str]]], batch_size: int = 64) -> float:
    """Token accuracy of a ``fit_bilm_tagger`` network on (words, tags) sentences (unseen tags count as wrong)."""
    net.eval()
    ids = word_ids(tokenizer, [w for w, _ in sentences])
    predicted: list[list[str]] = []
    for lo in range(0, len(ids), batch_size):
        words, mask = pad_batch(ids[lo:lo + batch_size], 0)
        predicted += [[tags[t] for t in path] for path in net.decode({"words": words, "word_mask": mask.long()})]
    return token_accuracy([list(t) for _, t in sentences], predicted)
