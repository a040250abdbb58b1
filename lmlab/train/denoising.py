"""Encoder objectives on the one trainer: BERT's masked LM (optionally with next-sentence
prediction, or ALBERT's sentence-order prediction) and ELECTRA's replaced-token detection.

Each objective noises the batch's token windows itself (with ``lmlab.data.noising``), from a
generator seeded by (seed, step), so a resumed run sees exactly the same noise. Models without a
``[MASK]`` token get one appended after the tokenizer's ids (``extra_token_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError
from ..data.noising import (
    IGNORE_INDEX,
    mask_tokens,
    next_sentence_pairs,
    pack_sentence_pair,
    sentence_order_pairs,
    word_start_table,
)
from ..models.config import TransformerConfig
from ..models.transformer import TransformerLM
from .objectives import token_loss

MASK_NAMES = ("[MASK]", "<mask>")


def mask_token_id(tokenizer) -> int | None:
    """The tokenizer's own mask token (``[MASK]`` or ``<mask>``), or None."""
    for name in MASK_NAMES:
        found = tokenizer.token_to_id(name)
        if found is not None:
            return found
    return None


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, step): the noise of a step is reproducible."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def word_starts(tokenizer, extra_tokens: int = 0) -> torch.Tensor:
    """Per id, whether it begins a word (for whole-word masking), from the vocabulary's markers:
    WordPiece ``##`` continuations, or SentencePiece ``▁`` / byte-level ``Ġ`` word starts."""
    pieces = [tokenizer.id_to_token(i) or "" for i in range(tokenizer.vocab_size)] + ["[MASK]"] * extra_tokens
    if any(p.startswith("##") for p in pieces):
        return word_start_table(pieces, continuation_prefix="##")
    for marker in ("▁", "Ġ"):
        if sum(p.startswith(marker) for p in pieces) > len(pieces) // 10:
            return word_start_table(pieces, start_prefix=marker)
    raise ConfigError("whole-word masking needs a subword vocabulary that marks words (##, ▁ or Ġ)",
                      "use a WordPiece, SentencePiece or byte-level BPE tokenizer, or drop --whole-word")


class MaskedLM:
    """BERT's masked-LM loss: select ``rate`` of the non-special tokens (whole words with
    ``word_starts``, a per-id table), replace by [MASK] / a random id / themselves 80/10/10,
    and predict the originals."""

    def __init__(self, mask_id: int, vocab_size: int, *, rate: float = 0.15, mask_fraction: float = 0.8,
                 random_fraction: float = 0.1, special_ids: Sequence[int] = (),
                 word_starts: torch.Tensor | None = None, seed: int = 0) -> None:
        self.mask_id, self.vocab_size = int(mask_id), int(vocab_size)
        self.options = dict(rate=rate, mask_fraction=mask_fraction, random_fraction=random_fraction)
        self.special_ids = sorted({int(i) for i in special_ids})
        self.word_starts = word_starts
        self.seed = seed

    def noise(self, ids: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(noised inputs, labels with -100 where nothing is predicted), on the device of ``ids``."""
        cpu = ids.cpu()
        starts = None if self.word_starts is None else self.word_starts[cpu]
        inputs, labels = mask_tokens(cpu, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                     special_ids=self.special_ids, word_starts=starts,
                                     generator=step_generator(self.seed, step), **self.options)
        return inputs.to(ids.device), labels.to(ids.device)

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        inputs, labels = self.noise(batch["input"], int(batch.get("step", 0)))
        logits, _ = model(inputs)
        n = int((labels != IGNORE_INDEX).sum())
        if n == 0:
            return logits.sum() * 0.0, 0
        return token_loss(logits, labels), n

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Sequence[dict], first_step: int = 10**9) -> dict[str, float]:
        """Masked-token loss and accuracy over ``batches`` (noise seeded apart from training steps)."""
        total_loss, correct, count = 0.0, 0, 0
        for i, batch in enumerate(batches):
            inputs, labels = self.noise(batch["input"], first_step + i)
            logits, _ = model(inputs)
            keep = labels != IGNORE_INDEX
            if not keep.any():
                continue
            total_loss += float(F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum"))
            correct += int((logits[keep].argmax(-1) == labels[keep]).sum())
            count += int(keep.sum())
        return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1), "tokens": count}


class ElectraModel(nn.Module):
    """ELECTRA's pair: a small masked-LM generator and a discriminator that share token embeddings
    (and positions), plus the discriminator's per-token "replaced?" head."""

    def __init__(self, discriminator: TransformerLM, generator_layers: int = 1, generator_d_ff: int | None = None) -> None:
        super().__init__()
        cfg = discriminator.config
        gen_cfg = TransformerConfig.from_dict({**cfg.to_dict(), "n_layers": generator_layers,
                                               "d_ff": generator_d_ff or max(cfg.d_ff // 4, 1)})
        self.discriminator = discriminator
        self.generator = TransformerLM(gen_cfg)
        self.generator.embed = discriminator.embed  # shared embeddings (ELECTRA §3.2)
        if cfg.tie_embeddings:
            self.generator.head.weight = discriminator.embed.weight
        if discriminator.positions is not None:
            self.generator.positions = discriminator.positions
        self.rtd_head = nn.Linear(cfg.d_model, 1)

    def forward(self, ids: torch.Tensor, state=None) -> tuple[torch.Tensor, None]:
        """The discriminator's LM logits (what a saved ELECTRA encoder is used for)."""
        return self.discriminator(ids, state)

    def replaced_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-token logit [B, T] that the token was replaced by the generator."""
        hidden, _ = self.discriminator.hidden_states(ids)
        return self.rtd_head(hidden).squeeze(-1)


class Electra(MaskedLM):
    """ELECTRA (Clark et al., 2020): the generator's masked-LM loss plus ``rtd_weight`` × the
    discriminator's binary cross-entropy on which tokens the generator's samples replaced."""

    def __init__(self, mask_id: int, vocab_size: int, *, rtd_weight: float = 50.0, **options) -> None:
        super().__init__(mask_id, vocab_size, **options)
        self.rtd_weight = rtd_weight

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        electra = getattr(model, "module", model)
        ids = batch["input"]
        inputs, labels = self.noise(ids, int(batch.get("step", 0)))
        logits, _ = electra.generator(inputs)
        selected = labels != IGNORE_INDEX
        mlm = token_loss(logits, labels) if selected.any() else logits.sum() * 0.0
        with torch.no_grad():
            gen = step_generator(self.seed + 1, int(batch.get("step", 0)))
            probs = torch.softmax(logits.detach().float(), -1).cpu()
            samples = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen).view(ids.shape)
        corrupted = torch.where(selected, samples.to(ids.device), ids)
        replaced = (corrupted != ids).float()
        keep = ~torch.isin(ids, torch.tensor(self.special_ids, dtype=torch.long, device=ids.device))
        rtd = F.binary_cross_entropy_with_logits(electra.replaced_logits(corrupted)[keep].float(), replaced[keep])
        return mlm + self.rtd_weight * rtd, int(keep.sum())


class NspModel(nn.Module):
    """An encoder with BERT's next-sentence head: the ``[CLS]`` state through the pooler
    (dense + tanh) and a binary classifier (is B the sentence after A? — or, for ALBERT's
    sentence-order prediction, are A and B swapped?)."""

    def __init__(self, encoder: TransformerLM) -> None:
        super().__init__()
        d = encoder.config.d_model
        self.encoder = encoder
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor, state=None, attention_mask: torch.Tensor | None = None,
                **kwargs) -> tuple[torch.Tensor, None]:
        """The encoder's LM logits (what the saved encoder is used for)."""
        return self.encoder(ids, state, attention_mask, **kwargs)

    def next_sentence_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, 2] logits (index 0 = is next, 1 = random) from the states' first ([CLS]) position."""
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0])))


class MaskedLMWithNsp(MaskedLM):
    """BERT's two pretraining losses summed: each window is cut at a random point into sentences
    A and B, B swapped for a piece of another row half of the time (``next_sentence_pairs``),
    packed as ``[CLS] A [SEP] B [SEP]`` with segments 0/1 (``pack_sentence_pair``), then masked
    LM on the packed rows plus ``nsp_weight`` × cross-entropy of the next-sentence head."""

    def __init__(self, mask_id: int, vocab_size: int, *, cls_id: int, sep_id: int, pad_id: int,
                 nsp_weight: float = 1.0, **options) -> None:
        super().__init__(mask_id, vocab_size, **options)
        self.cls_id, self.sep_id, self.pad_id, self.nsp_weight = cls_id, sep_id, pad_id, nsp_weight

    def pairs(self, ids: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(packed ids [B, T], segments [B, T], attention mask [B, T], labels [B]) for windows ``ids``."""
        gen = step_generator(self.seed + 2, step)
        width = ids.shape[1]
        body = max(width - 3, 2)  # room for [CLS] and two [SEP]
        docs = []
        for row in ids.cpu().tolist():
            cut = int(torch.randint(1, body, (), generator=gen))
            docs.append([row[:cut], row[cut:body]])
        return self.pack(next_sentence_pairs(docs, random_fraction=0.5, generator=gen), width)

    def pack(self, rows: list[tuple[list[int], list[int], int]], width: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, segments, attention mask, labels) of (a, b, label) rows packed as [CLS] a [SEP] b [SEP]."""
        packed = [pack_sentence_pair(a, b, cls_id=self.cls_id, sep_id=self.sep_id, max_length=width)
                  for a, b, _ in rows]
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        segments, mask = torch.zeros_like(out), torch.zeros_like(out)
        for i, (row_ids, row_segments) in enumerate(packed):
            out[i, :len(row_ids)] = torch.tensor(row_ids)
            segments[i, :len(row_ids)] = torch.tensor(row_segments)
            mask[i, :len(row_ids)] = 1
        labels = torch.tensor([label for _, _, label in rows])
        return out, segments, mask, labels

    def __call__(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        nsp = getattr(model, "module", model)
        step, device = int(batch.get("step", 0)), batch["input"].device
        packed, segments, mask, labels = (t.to(device) for t in self.pairs(batch["input"], step))
        inputs, mlm_labels = self.noise(packed, step)
        hidden, _ = nsp.encoder.hidden_states(inputs, attention_mask=mask, token_type_ids=segments)
        selected = mlm_labels != IGNORE_INDEX
        logits = nsp.encoder.logits(hidden)
        mlm = token_loss(logits, mlm_labels) if selected.any() else logits.sum() * 0.0
        next_loss = F.cross_entropy(nsp.next_sentence_logits(hidden).float(), labels)
        return mlm + self.nsp_weight * next_loss, int(selected.sum())


class MaskedLMWithSop(MaskedLMWithNsp):
    """ALBERT's pretraining losses (Lan et al., 2020): masked LM plus ``nsp_weight`` × sentence-order
    prediction. Each window is cut into two consecutive segments — at a sentence end
    (``sentence_end_ids``, e.g. the ids of ``.``, ``!``, ``?``) when the window's middle has one, else at a
    random point — and half of the pairs are swapped (``sentence_order_pairs``); the head learns which."""

    def __init__(self, mask_id: int, vocab_size: int, *, sentence_end_ids: Sequence[int] = (), **options) -> None:
        super().__init__(mask_id, vocab_size, **options)
        self.sentence_end_ids = sorted({int(i) for i in sentence_end_ids})

    def pairs(self, ids: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        gen = step_generator(self.seed + 2, step)
        width = ids.shape[1]
        body = max(width - 3, 2)  # room for [CLS] and two [SEP]
        ends = set(self.sentence_end_ids)
        docs = []
        for row in ids.cpu().tolist():
            cuts = [i + 1 for i in range(body // 4, body - body // 4) if row[i] in ends]  # after a sentence end
            if cuts:
                cut = cuts[int(torch.randint(len(cuts), (), generator=gen))]
            else:
                cut = int(torch.randint(1, body, (), generator=gen))
            docs.append([row[:cut], row[cut:body]])
        return self.pack(sentence_order_pairs(docs, swap_fraction=0.5, generator=gen), width)
