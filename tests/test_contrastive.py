"""Contrastive learning: InfoNCE equals sentence-transformers' MultipleNegativesRankingLoss (with hard
negatives) and its symmetric form; SimCSE on the one trainer teaches a tiny encoder that each
sentence's positive is its translation through a lexicon (held-out pairs retrieved far above
chance); the batch source covers each sentence once a pass and resumes exactly; what cannot work
is refused."""

from __future__ import annotations

import random

import pytest
import torch
from torch_threads import one_thread  # noqa: F401

from lmlab.core.errors import ConfigError, DataError
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer
from lmlab.train.contrastive import (
    SentenceBatches,
    SentenceEmbedder,
    info_nce,
    simcse,
    with_dropout,
)


class Given(torch.nn.Module):
    """Stands in for a SentenceTransformer: returns the embeddings it is handed."""

    def forward(self, features: dict) -> dict:
        return {"sentence_embedding": features["x"]}


@pytest.mark.parametrize("negatives", [False, True])
def test_info_nce_equals_sentence_transformers(negatives):
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    torch.manual_seed(0)
    q, k = torch.randn(6, 8), torch.randn(12 if negatives else 6, 8)
    peer = losses.MultipleNegativesRankingLoss(Given(), scale=1 / 0.05)  # cosine × scale = cosine / temperature
    columns = [q, k[:6]] + ([k[6:]] if negatives else [])  # anchors, positives, one column of hard negatives
    expect = peer.compute_loss_from_embeddings(columns, None)
    torch.testing.assert_close(info_nce(q, k, 0.05), expect, atol=1e-5, rtol=1e-6)
    if not negatives:
        symmetric = losses.MultipleNegativesRankingLoss(Given(), scale=1 / 0.1, partition_mode="per_direction",
                                                         directions=("query_to_doc", "doc_to_query"))
        expect = symmetric.compute_loss_from_embeddings([q, k], None)
        torch.testing.assert_close(info_nce(q, k, 0.1, symmetric=True), expect, atol=1e-5, rtol=1e-6)


def test_info_nce_by_hand_and_refusals():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    cos = torch.tensor([[1.0, 2 ** -0.5], [0.0, 2 ** -0.5]]) / 0.5
    expect = -(torch.log_softmax(cos, -1)[0, 0] + torch.log_softmax(cos, -1)[1, 1]) / 2
    torch.testing.assert_close(info_nce(q, k, 0.5), expect)
    with pytest.raises(ConfigError, match="queries"):
        info_nce(q, k[:1])
    with pytest.raises(ConfigError, match="as many keys"):
        info_nce(q, torch.cat([k, k]), symmetric=True)
    with pytest.raises(ConfigError, match="temperature"):
        info_nce(q, k, 0.0)


LEXICON = dict(zip("red green blue cat dog fish big small old new fast slow".split(),
                   "rot grün blau katze hund fisch groß klein alt neu schnell langsam".split(), strict=True))


def pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    rows = [rng.sample(sorted(LEXICON), 3) for _ in range(n)]
    return [" ".join(r) for r in rows], [" ".join(LEXICON[w] for w in r) for r in rows]


def tiny_encoder(tok) -> TransformerLM:
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("bert", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                        d_ff=64, context_length=16)
    return TransformerLM(cfg)


@torch.no_grad()
def retrieval_accuracy(encoder, tok, queries: list[str], keys: list[str]) -> float:
    embed = SentenceEmbedder(encoder).eval()
    a = embed(*_in_order(tok, queries))
    b = embed(*_in_order(tok, keys))
    sims = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
    return float((sims.argmax(-1) == torch.arange(len(queries))).float().mean())


def _in_order(tok, texts):
    from lmlab.data.loaders import pad_batch

    enc = tok.batch_encode(texts, add_special_tokens=True, max_length=8)
    return pad_batch([ids[:sum(m)] for ids, m in zip(enc.ids, enc.attention_mask, strict=True)], tok.pad_id)


def test_supervised_simcse_learns_the_lexicon_on_the_one_trainer(tmp_path, no_progress):
    en, de = pairs(600, 0)
    test_en, test_de = pairs(40, 1)
    tok = WordLevelTokenizer("word").train(en + de)
    encoder = tiny_encoder(tok)
    before = retrieval_accuracy(encoder, tok, test_en, test_de)
    trained, result = simcse(encoder, tok, en, tmp_path / "run", positives=de, steps=80, batch_size=32, lr=3e-3,
                             max_length=8, dropout=0.0)
    after = retrieval_accuracy(trained, tok, test_en, test_de)
    assert before < 0.3 and after > 0.8, (before, after)
    assert result.steps == 80 and (tmp_path / "run" / "metrics.jsonl").exists()
    assert not trained.training  # handed back ready to embed


def test_unsupervised_simcse_trains_on_dropout_views(tmp_path, no_progress):
    en, _ = pairs(200, 0)
    tok = WordLevelTokenizer("word").train(en)
    encoder = tiny_encoder(tok)
    _, result = simcse(encoder, tok, en, tmp_path / "run", steps=20, batch_size=32, lr=3e-3, max_length=8)
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"] and 0 <= records[-1]["accuracy"] <= 1
    with pytest.raises(ConfigError, match="needs dropout"):
        simcse(encoder, tok, en, tmp_path / "r2", steps=1, dropout=0.0)


def test_sentence_batches_cover_each_sentence_once_a_pass_and_resume(no_progress):
    en, de = [f"w{i} x" for i in range(50)], [f"v{i}" for i in range(50)]
    tok = WordLevelTokenizer("word").train(en + de)
    batches = SentenceBatches(tok, en, 8, positives=de, seed=3, max_length=8)
    assert batches.per_pass == 6
    seen = []
    for i in range(6):
        b = batches.batch(i)
        assert b["ids"].shape[0] == 8 and b["positive_ids"].shape[0] == 8
        seen += [tok.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(b["ids"], b["mask"],
                                                                                         strict=True)]
    assert len(set(seen)) == len(seen) == 48  # no sentence twice in a pass
    again = SentenceBatches(tok, en, 8, positives=de, seed=3, max_length=8)
    assert torch.equal(again.batch(7)["ids"], batches.batch(7)["ids"])  # a resumed run sees the same batches
    with pytest.raises(DataError, match="50 sentences but 49 positives"):
        SentenceBatches(tok, en, 8, positives=de[:49])
    with pytest.raises(DataError, match="fewer than one batch"):
        SentenceBatches(tok, en[:4], 8)


@torch.no_grad()
def test_with_dropout_keeps_the_weights_and_drops_only_in_training():
    tok = WordLevelTokenizer("word").train(["a b c d"])
    encoder = tiny_encoder(tok).eval()
    noisy = with_dropout(encoder, 0.3)
    ids = torch.tensor([[4, 5, 6, 7]])
    torch.testing.assert_close(noisy.eval().hidden_states(ids)[0], encoder.hidden_states(ids)[0])
    noisy.train()
    assert not torch.allclose(noisy.hidden_states(ids)[0], noisy.hidden_states(ids)[0])
    with pytest.raises(ConfigError, match="bidirectional"):
        SentenceEmbedder(TransformerLM(TransformerConfig.from_preset("gpt2", vocab_size=10, d_model=8, n_layers=1,
                                                                     n_heads=2, context_length=8)))
