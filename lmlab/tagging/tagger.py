"""``Tagger``: a sequence labeller trained on the one trainer — a BiLSTM over word and character
features, or a pretrained lmlab encoder (MiniLM, a BERT directory, any lmlab transformer) read at
each word's first subword — with a softmax or a linear-chain CRF on top (``networks``).

With a CRF over BIO tags (``constraints="auto"``) the decoder may never put ``I-X`` after anything
but ``B-X``/``I-X``; training data that breaks this is refused, naming the first bad transition.
A tagger is a directory like every lmlab model: ``config.json`` (kind, tags, settings, word and
character vocabularies, or the backbone's config), ``model.safetensors`` and, for an encoder,
its ``tokenizer.json``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classify.batches import LabeledBatches
from ..classify.finetune import load_backbone
from ..core.errors import ConfigError, DataError, ModelError
from ..core.validate import check_choice, check_number
from ..data.loaders import pad_batch
from ..models.directory import model_class, read_model_dir, save_model_dir
from ..train import TrainConfig, train
from .bio import bio_constraints, check_bio_sequences, is_bio_tag_set
from .metrics import entity_scores, token_accuracy
from .networks import BiLSTMEncoder, SubwordEncoder, TaggerNet

KINDS = ("bilstm", "encoder")
CONSTRAINTS = ("auto", "bio", "none")
MODEL_TYPE = "tagger"
PAD, UNK = 0, 1  # word and character ids of the BiLSTM's vocabularies
#: per-kind defaults of the settings left as None
DEFAULTS = {"bilstm": dict(lr=2e-3, epochs=8, dropout=0.5, crf_lr_scale=1.0),
            "encoder": dict(lr=5e-5, epochs=3, dropout=0.1, crf_lr_scale=100.0)}

Sentences = Sequence[tuple[Sequence[str], Sequence[str]]]


def word_key(word: str) -> str:
    """The BiLSTM's word-embedding key: lower-cased, digits as 0 (the characters keep case and digits)."""
    return re.sub(r"\d", "0", word.lower())


class Tagger:
    """Sequence labeller (estimator API: ``fit``, ``predict``, ``evaluate``); see the module docstring."""

    def __init__(self, kind: str = "bilstm", *, backbone: str | os.PathLike | tuple = "minilm", crf: bool = True,
                 constraints: str = "auto", epochs: int | None = None, steps: int | None = None,
                 lr: float | None = None, batch_size: int = 32, dropout: float | None = None,
                 crf_lr_scale: float | None = None, warmup: float = 0.1, weight_decay: float = 0.01,
                 max_length: int = 512, d_word: int = 100, d_hidden: int = 200, char_filters: int = 50,
                 word_dropout: float = 0.5, column: str | int = "ner", device: str = "auto", seed: int = 0,
                 run_dir: str | os.PathLike | None = None) -> None:
        self.kind = check_choice("kind", kind, KINDS)
        defaults = DEFAULTS[kind]
        self.backbone, self.crf = backbone, bool(crf)
        self.constraints = check_choice("constraints", constraints, CONSTRAINTS)
        if self.constraints == "bio" and not self.crf:
            raise ConfigError("BIO constraints act through the CRF", "add the CRF, or use --constraints none")
        self.epochs = int(check_number("epochs", epochs or defaults["epochs"], low=1, integer=True))
        self.steps = None if steps is None else int(check_number("steps", steps, low=1, integer=True))
        self.lr = float(check_number("lr", lr or defaults["lr"], low=0, low_inclusive=False))
        self.batch_size = int(check_number("batch_size", batch_size, low=1, integer=True))
        self.dropout = float(check_number("dropout", defaults["dropout"] if dropout is None else dropout, low=0,
                                          high=1, high_inclusive=False))
        self.crf_lr_scale = float(check_number("crf_lr_scale", crf_lr_scale or defaults["crf_lr_scale"], low=0,
                                               low_inclusive=False))
        self.warmup = float(check_number("warmup", warmup, low=0, high=1))
        self.weight_decay = float(check_number("weight_decay", weight_decay, low=0))
        self.max_length = int(check_number("max_length", max_length, low=3, integer=True))
        self.d_word = int(check_number("d_word", d_word, low=1, integer=True))
        self.d_hidden = int(check_number("d_hidden", d_hidden, low=1, integer=True))
        self.char_filters = int(check_number("char_filters", char_filters, low=0, integer=True))
        self.word_dropout = float(check_number("word_dropout", word_dropout, low=0, high=1))
        self.column = column  # the CoNLL column the tags come from, kept for evaluation
        self.device, self.seed, self.run_dir = device, seed, run_dir
        self.tags: list[str] | None = None
        self.words: list[str] | None = None
        self.chars: list[str] | None = None
        self.tokenizer = None
        self.net: TaggerNet | None = None
        self.train_result = None
        self.bio_constrained = False

    # --- words → model inputs -------------------------------------------------------------------
    def _vocabularies(self, sentences: Sentences) -> tuple[list[str], list[str], set[int]]:
        counts = Counter(word_key(w) for words, _ in sentences for w in words)
        words = ["<pad>", "<unk>", *sorted(counts)]
        chars = ["<pad>", "<unk>", *sorted({c for ws, _ in sentences for w in ws for c in w})]
        index = {w: i for i, w in enumerate(words)}
        return words, chars, {index[w] for w, n in counts.items() if n == 1}

    def encode(self, sentences: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """Per sentence, what the network reads: word and character ids (BiLSTM), or subword ids and
        the position of each word's first subword (encoder)."""
        if any(not len(words) for words in sentences):
            k = next(i for i, words in enumerate(sentences) if not len(words))
            raise DataError(f"sentence {k + 1} has no words", "drop empty sentences")
        if self.kind == "bilstm":
            word_ids = {w: i for i, w in enumerate(self.words)}
            char_ids = {c: i for i, c in enumerate(self.chars)}
            return [{"words": [word_ids.get(word_key(w), UNK) for w in words],
                     "chars": [[char_ids.get(c, UNK) for c in w[:30]] for w in words]} for words in sentences]
        return [self._subwords(words, k) for k, words in enumerate(sentences)]

    def _subwords(self, words: Sequence[str], k: int) -> dict[str, Any]:
        text, spans, at = "", [], 0
        for w in words:
            spans.append((at, at + len(w)))
            text += w + " "
            at += len(w) + 1
        ids, offsets = self.tokenizer.encode_with_offsets(text[:-1], add_special_tokens=True)
        if len(ids) > self.max_length:
            raise DataError(f"sentence {k + 1} is {len(ids)} subwords long, more than max_length {self.max_length}",
                            "raise --max-length (up to the encoder's context) or split the sentence")
        first: list[int | None] = [None] * len(words)
        w = 0
        for pos, (start, end) in enumerate(offsets):
            if end <= start:  # an added special token
                continue
            while w < len(spans) - 1 and start >= spans[w][1]:
                w += 1
            if first[w] is None:
                first[w] = pos
        for i, pos in enumerate(first):  # a word the tokenizer dropped entirely reads its left neighbour
            if pos is None:
                first[i] = first[i - 1] if i else 0
        return {"input": ids, "first": first}

    def collate(self, rows: Sequence[dict], tags: Sequence[Sequence[int]] | None = None,
                unk_words: tuple[set[int], np.random.Generator] | None = None) -> dict[str, torch.Tensor]:
        """A padded batch; ``unk_words`` (singleton ids, generator) replaces singletons by <unk> at
        ``word_dropout`` rate so the <unk> embedding learns something."""
        n_words = [len(r["first"] if self.kind == "encoder" else r["words"]) for r in rows]
        width = max(n_words)
        word_mask = torch.tensor([[1] * n + [0] * (width - n) for n in n_words], dtype=torch.long)
        batch: dict[str, torch.Tensor] = {"word_mask": word_mask}
        if self.kind == "encoder":
            pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
            batch["input"], mask = pad_batch([r["input"] for r in rows], pad)
            batch["mask"] = mask.long()
            batch["first"] = torch.tensor([r["first"] + [0] * (width - len(r["first"])) for r in rows])
        else:
            words = [list(r["words"]) for r in rows]
            if unk_words is not None:
                singletons, rng = unk_words
                words = [[UNK if w in singletons and rng.random() < self.word_dropout else w for w in ws]
                         for ws in words]
            batch["words"] = torch.tensor([ws + [PAD] * (width - len(ws)) for ws in words])
            longest = max(len(c) for r in rows for c in r["chars"])
            batch["chars"] = torch.tensor([[c + [PAD] * (longest - len(c)) for c in r["chars"]]
                                           + [[PAD] * longest] * (width - len(r["chars"])) for r in rows])
        if tags is not None:
            batch["tags"] = torch.tensor([list(t) + [0] * (width - len(t)) for t in tags])
        return batch

    # --- estimator API ----------------------------------------------------------------------------
    def fit(self, sentences: Sentences) -> Tagger:
        """Train on (words, tags) sentences."""
        if not sentences:
            raise DataError("no sentences to train on", "pass a CoNLL file with tagged sentences")
        for k, (words, tags) in enumerate(sentences):
            if len(words) != len(tags):
                raise DataError(f"sentence {k + 1} has {len(words)} words but {len(tags)} tags", "one tag per word")
        self.tags = sorted({t for _, tags in sentences for t in tags})
        bio = is_bio_tag_set(self.tags)
        if self.constraints == "bio" and not bio:
            bad = next(t for t in self.tags if not is_bio_tag_set([t]))
            raise DataError(f"--constraints bio with a tag set that is not BIO: {bad!r}",
                            "use O / B-TYPE / I-TYPE tags, or --constraints none")
        self.bio_constrained = self.crf and (self.constraints == "bio" or (self.constraints == "auto" and bio))
        if self.bio_constrained:
            check_bio_sequences([tags for _, tags in sentences])
        singletons: set[int] = set()
        if self.kind == "bilstm":
            self.words, self.chars, singletons = self._vocabularies(sentences)
            encoder = BiLSTMEncoder(len(self.words), len(self.chars), d_word=self.d_word, d_hidden=self.d_hidden,
                                    char_filters=self.char_filters, dropout=self.dropout)
        else:
            backbone, self.tokenizer = load_backbone(self.backbone)
            encoder = SubwordEncoder(backbone)
        torch.manual_seed(self.seed)
        allowed, start = bio_constraints(self.tags) if self.bio_constrained else (None, None)
        self.net = TaggerNet(encoder, len(self.tags), crf=self.crf, dropout=self.dropout, allowed=allowed,
                             start_allowed=start, crf_lr_scale=self.crf_lr_scale)
        tag_ids = {t: i for i, t in enumerate(self.tags)}
        rows = self.encode([words for words, _ in sentences])
        labels = [[tag_ids[t] for t in tags] for _, tags in sentences]
        source = TaggedBatches(self, rows, labels, singletons)
        steps = self.steps or self.epochs * source.plan.batches_per_epoch
        config = TrainConfig(steps=steps, lr=self.lr, schedule="linear", warmup=round(self.warmup * steps),
                             weight_decay=self.weight_decay, beta2=0.999, clip=5.0 if self.kind == "bilstm" else 1.0,
                             log_every=10, checkpoint_every=200 if self.run_dir is not None else 0,
                             device=self.device, seed=self.seed)
        if self.run_dir is not None:
            self.train_result = train(self.net, tagging_loss, source, config, self.run_dir, resume=True)
        else:
            with tempfile.TemporaryDirectory(prefix="lmlab-tagger-") as tmp:
                self.train_result = train(self.net, tagging_loss, source, config, tmp)
        self.net.eval()
        return self

    def _check_fitted(self) -> None:
        if self.net is None:
            raise ModelError("this tagger is not trained yet", "call fit(sentences) or load a tagger directory")

    @torch.no_grad()
    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 64) -> list[list[str]]:
        """The tags of each sentence's words (sentences batched by length)."""
        self._check_fitted()
        self.net.eval()
        rows = self.encode(sentences)
        order = np.argsort([len(r.get("input", r.get("words"))) for r in rows], kind="stable")
        device = next(self.net.parameters()).device
        out: list[list[str]] = [[] for _ in rows]
        for lo in range(0, len(rows), batch_size):
            pick = order[lo:lo + batch_size]
            batch = {k: v.to(device) for k, v in self.collate([rows[i] for i in pick]).items()}
            for i, path in zip(pick, self.net.decode(batch), strict=True):
                out[i] = [self.tags[t] for t in path]
        return out

    def evaluate(self, sentences: Sentences) -> dict:
        """Token accuracy and, for BIO tags, entity precision / recall / F1 (conlleval / seqeval)."""
        gold = [list(tags) for _, tags in sentences]
        predicted = self.predict([words for words, _ in sentences])
        result = {"sentences": len(gold), "tokens": sum(map(len, gold)), "accuracy": token_accuracy(gold, predicted)}
        if is_bio_tag_set(self.tags):
            result.update(entity_scores(gold, predicted))
        return result

    # --- persistence --------------------------------------------------------------------------------
    SETTINGS = ("kind", "crf", "constraints", "epochs", "steps", "lr", "batch_size", "dropout", "crf_lr_scale",
                "warmup", "weight_decay", "max_length", "d_word", "d_hidden", "char_filters", "word_dropout", "column", "seed")

    def to_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        self._check_fitted()
        config = {"model_type": MODEL_TYPE, **{k: getattr(self, k) for k in self.SETTINGS}, "tags": self.tags,
                  "bio_constrained": self.bio_constrained}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        if self.kind == "bilstm":
            config.update(words=self.words, chars=self.chars)
        else:
            backbone_config, backbone_tensors = self.net.encoder.backbone.to_state()
            tensors = {k: v for k, v in tensors.items() if not k.startswith("encoder.backbone.")}
            tensors.update({f"encoder.backbone.{k}": v for k, v in backbone_tensors.items()})
            config.update(backbone=str(self.backbone) if not isinstance(self.backbone, tuple) else "in-memory",
                          backbone_config=backbone_config)
        return config, tensors

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tagger as a model directory."""
        return save_model_dir(path, *self.to_state(), tokenizer=self.tokenizer)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tagger:
        """Read a tagger saved by ``save``."""
        config, tensors = read_model_dir(path)
        if config.get("model_type") != MODEL_TYPE:
            raise ModelError(f"{path} holds a {config.get('model_type')!r} model, not a tagger",
                             "pass a directory written by lmlab tag train")
        model = cls(**{k: config[k] for k in cls.SETTINGS})
        model.tags, model.bio_constrained = list(config["tags"]), bool(config["bio_constrained"])
        if model.kind == "bilstm":
            model.words, model.chars = list(config["words"]), list(config["chars"])
            encoder = BiLSTMEncoder(len(model.words), len(model.chars), d_word=model.d_word, d_hidden=model.d_hidden,
                                    char_filters=model.char_filters, dropout=model.dropout)
        else:
            from ..tokenizers import load

            model.backbone, model.tokenizer = config["backbone"], load(path)
            backbone_config = config["backbone_config"]
            prefix = "encoder.backbone."
            backbone = model_class(str(backbone_config.get("model_type"))).from_state(
                backbone_config, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            encoder = SubwordEncoder(backbone)
        allowed, start = bio_constraints(model.tags) if model.bio_constrained else (None, None)
        model.net = TaggerNet(encoder, len(model.tags), crf=model.crf, dropout=model.dropout, allowed=allowed,
                              start_allowed=start, crf_lr_scale=model.crf_lr_scale)
        own = {k: v for k, v in tensors.items() if not k.startswith("encoder.backbone.")}  # the backbone is loaded
        expected = {k: v for k, v in model.net.state_dict().items() if not k.startswith("encoder.backbone.")}
        if set(expected) != set(own) or any(tuple(own[k].shape) != tuple(expected[k].shape) for k in expected):
            raise ModelError("the tagger's weights do not match its config.json",
                             "the directory is damaged or mixes files of different taggers")
        model.net.load_state_dict(own, strict=False)
        model.net.eval()
        return model


def tagging_loss(net: TaggerNet, batch: dict) -> tuple[torch.Tensor, int]:
    """The trainer's objective for a tagger: the network's loss per word, and the word count."""
    return net.loss(batch), int(batch["word_mask"].sum())


class TaggedBatches:
    """The trainer's batch source: sentences drawn and length-bucketed by ``LabeledBatches``' plan
    (shuffled passes), collated by the tagger; a pure function of the step, so runs resume exactly."""

    def __init__(self, tagger: Tagger, rows: list[dict], labels: list[list[int]], singletons: set[int]) -> None:
        self.tagger, self.rows, self.labels, self.singletons = tagger, rows, labels, singletons
        lengths = [[0] * len(r.get("input", r.get("words"))) for r in rows]  # the plan buckets by length
        self.plan = LabeledBatches(lengths, np.zeros(len(rows), dtype=np.int64), batch_size=tagger.batch_size,
                                   pad_id=0, seed=tagger.seed)

    def batch(self, index: int, rank: int = 0, world: int = 1) -> dict:
        pick = self.plan.indices(index)[rank::world]
        rng = np.random.default_rng([self.tagger.seed, 3 << 20, index])
        return self.tagger.collate([self.rows[i] for i in pick], [self.labels[i] for i in pick],
                                   unk_words=(self.singletons, rng) if self.singletons else None)
