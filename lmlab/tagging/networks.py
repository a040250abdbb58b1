"""Networks that give one score per (word, tag): a BiLSTM over word and character features, or any
lmlab encoder read at each word's first subword; and ``TaggerNet``, which puts a softmax or a
linear-chain CRF on either.

* ``BiLSTMEncoder`` (Huang et al., 2015; Lample et al., 2016; Ma & Hovy, 2016): word embeddings
  plus a character CNN with max-pooling per word (so unseen words still have a spelling), then a
  bidirectional LSTM; inputs ``words`` [B, W] and ``chars`` [B, W, C].
* ``SubwordEncoder`` (Devlin et al., 2019, §5.3): a pretrained transformer runs over the sentence's
  subwords; each word is represented by the hidden state of its first subword (``first`` [B, W]).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.crf import LinearChainCRF


class BiLSTMEncoder(nn.Module):
    """Word + character-CNN features → BiLSTM → states [B, W, 2·d_hidden]."""

    def __init__(self, n_words: int, n_chars: int, *, d_word: int = 100, d_char: int = 30, char_filters: int = 50,
                 d_hidden: int = 200, n_layers: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.words = nn.Embedding(n_words, d_word, padding_idx=0)
        self.chars = nn.Embedding(n_chars, d_char, padding_idx=0) if char_filters else None
        self.char_cnn = nn.Conv1d(d_char, char_filters, kernel_size=3, padding=1) if char_filters else None
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(d_word + char_filters, d_hidden, n_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if n_layers > 1 else 0.0)
        self.width = 2 * d_hidden

    def forward(self, batch: dict) -> torch.Tensor:
        x = self.words(batch["words"])
        if self.char_cnn is not None:
            chars = batch["chars"]  # [B, W, C]
            b, w, c = chars.shape
            h = self.char_cnn(self.dropout(self.chars(chars.view(b * w, c))).transpose(1, 2))  # [BW, F, C]
            h = h.masked_fill((chars.view(b * w, 1, c) == 0), float("-inf")).amax(-1)
            x = torch.cat([x, torch.nan_to_num(h.view(b, w, -1), neginf=0.0)], dim=-1)
        lengths = batch["word_mask"].sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class SubwordEncoder(nn.Module):
    """A transformer with ``hidden_states`` read at each word's first subword → [B, W, d_model]."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.width = backbone.config.d_model

    def forward(self, batch: dict) -> torch.Tensor:
        hidden, _ = self.backbone.hidden_states(batch["input"], attention_mask=batch["mask"])
        first = batch["first"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, first)


class TaggerNet(nn.Module):
    """Features → dropout → linear emissions [B, W, K], scored by a CRF (``crf``) or a per-word softmax."""

    def __init__(self, encoder: nn.Module, num_tags: int, *, crf: bool, dropout: float = 0.1,
                 allowed: torch.Tensor | None = None, start_allowed: torch.Tensor | None = None,
                 crf_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.emit = nn.Linear(encoder.width, num_tags)
        self.crf = LinearChainCRF(num_tags, allowed, start_allowed) if crf else None
        self.crf_lr_scale = crf_lr_scale

    def emissions(self, batch: dict) -> torch.Tensor:
        return self.emit(self.dropout(self.encoder(batch))).float()

    def loss(self, batch: dict) -> torch.Tensor:
        """Mean negative log-likelihood per word (CRF: of whole sentences, divided by their words)."""
        scores, mask, tags = self.emissions(batch), batch["word_mask"].bool(), batch["tags"]
        if self.crf is not None:
            return -self.crf.log_likelihood(scores, tags, mask).sum() / mask.sum()
        return nn.functional.cross_entropy(scores[mask], tags[mask])

    @torch.no_grad()
    def decode(self, batch: dict) -> list[list[int]]:
        """Best tag ids of each sentence's words: Viterbi under the CRF, else the argmax per word."""
        scores, mask = self.emissions(batch), batch["word_mask"].bool()
        if self.crf is not None:
            return self.crf.decode(scores, mask)
        lengths = mask.sum(1).tolist()
        return [row[:n] for row, n in zip(scores.argmax(-1).tolist(), lengths, strict=True)]

    def lr_scales(self) -> list[tuple[nn.Parameter, float]]:
        """The CRF's parameters learn ``crf_lr_scale`` × the schedule's rate (the trainer's hook)."""
        return [] if self.crf is None else [(p, self.crf_lr_scale) for p in self.crf.parameters()]
