"""The bidirectional encoder (bert preset), prefix-LM masking, pooling, MiniLM parity with
sentence-transformers, ``lmlab embed`` and the glue into evaluation and retrieval."""

import json
import os
import re

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError
from lmlab.models.config import TransformerConfig
from lmlab.models.encoder import pool
from lmlab.models.transformer import TransformerLM

V = 41


def make(preset="bert", seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, context_length=24)
    args.update(kw)
    return TransformerLM(TransformerConfig.from_preset(preset, **args)).eval()


def test_bert_is_bidirectional_and_counts_its_parameters():
    m = make()
    assert sum(p.numel() for p in m.parameters()) == m.config.num_parameters()
    ids = torch.randint(0, V, (1, 10))
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % V
    a, b = m(ids)[0], m(changed)[0]
    assert not torch.allclose(a[0, 2], b[0, 2])  # an earlier position sees a later token


def test_segment_ids_change_the_output():
    m = make()
    ids = torch.randint(0, V, (1, 8))
    seg = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    assert not torch.allclose(m(ids)[0], m(ids, token_type_ids=seg)[0])
    assert torch.allclose(m(ids)[0], m(ids, token_type_ids=torch.zeros_like(seg))[0])


def test_right_padding_never_changes_real_tokens():
    m = make()
    ids = torch.randint(1, V, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    alone = m.hidden_states(ids)[0]
    batched = m.hidden_states(padded, attention_mask=mask)[0]
    assert torch.allclose(alone, batched[:, :6], atol=1e-5)


def test_prefix_lm_sees_the_prefix_both_ways_and_the_rest_causally():
    m = make("gpt2")
    ids = torch.randint(0, V, (1, 10))
    changed = ids.clone()
    changed[0, 3] = (ids[0, 3] + 1) % V  # inside the prefix of 4
    a, b = m(ids, prefix_length=4)[0], m(changed, prefix_length=4)[0]
    assert not torch.allclose(a[0, 1], b[0, 1])  # prefix positions see the whole prefix
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % V  # after the prefix: stays causal
    a, b = m(ids, prefix_length=4)[0], m(changed, prefix_length=4)[0]
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert torch.allclose(m(ids, prefix_length=1)[0], m(ids)[0], atol=1e-6)  # a prefix of one is causal


def test_pooling_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, -1.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 2.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    with pytest.raises(ConfigError):
        pool(hidden, mask, "median")


def _sentences(n=200):
    from lmlab.data.datasets import embedded_documents

    out = []
    for doc in embedded_documents():
        for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            if 3 <= len(s.split()) <= 120:
                out.append(s)
        if len(out) >= n:
            return out[:n]
    return out


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(no_progress):
    st_module = pytest.importorskip("sentence_transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmlab.embeddings import sentence_encoder
    from lmlab.models.encoder import minilm_dir

    texts = _sentences(200)
    assert len(texts) == 200
    ours = sentence_encoder("minilm", batch_size=50)(texts)
    st = st_module.SentenceTransformer(str(minilm_dir()), device="cpu")
    theirs = st.encode(texts, batch_size=50, convert_to_numpy=True)
    cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.99999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    batch = texts[:16]
    features = st.tokenize(batch)
    with torch.no_grad():
        token_embeddings = st.forward(features)["token_embeddings"]
    hidden, mask, ids = sentence_encoder("minilm").token_states(batch)
    assert features["input_ids"].tolist() == ids
    keep = mask.bool()
    assert (token_embeddings[keep] - hidden[keep]).abs().max() < 1e-5  # 2.7e-6 measured


@pytest.mark.slow
def test_embed_api_cli_and_glue(tmp_path, capsys, no_progress):
    import lmlab
    from lmlab.cli import main
    from lmlab.eval.encoders import ENCODERS as EVAL_ENCODERS
    from lmlab.retrieval.encoders import ENCODERS as RETRIEVAL_ENCODERS

    texts = ["A man is eating food.", "A man eats something.", "The stock market fell sharply today."]
    vecs = lmlab.embed(texts)
    assert vecs.shape == (3, 384)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # paraphrases are closer than unrelated text
    assert np.allclose(lmlab.embed(texts, batch_size=1), vecs, atol=1e-5)  # batching changes nothing
    cls = lmlab.embed(texts, pooling="cls", normalize=False)
    assert not np.allclose(np.linalg.norm(cls, axis=1), 1.0)
    assert main(["embed", "--text", texts[0], "--text", texts[1], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dim"] == 384 and np.allclose(out["embeddings"], vecs[:2], atol=1e-5)
    assert main(["embed", "--text", texts[0], "--out", str(tmp_path / "v.npy"), "--quiet"]) == 0
    assert np.allclose(np.load(tmp_path / "v.npy"), vecs[:1], atol=1e-6)
    encoder = EVAL_ENCODERS.get("minilm")()
    (words, states), = encoder.tokens(["unbelievable results"])
    assert words == ["unbelievable", "results"] and states.shape == (2, 384)
    assert np.allclose(encoder.sentences(texts), vecs, atol=1e-6)
    assert np.allclose(RETRIEVAL_ENCODERS["minilm"]()(texts), vecs, atol=1e-6)
