"""Perplexity of a document far longer than the model's context: sliding windows spread over batches of
at most ``batch_size``, vocabulary logits for a few positions at a time, the same figure at any batch
size as a window-by-window computation by hand, and a clear error when memory runs out."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

import lmlab.models.neural as neural
from lmlab.cli import main
from lmlab.core.errors import ModelError
from lmlab.data import from_texts
from lmlab.eval import evaluate_lm
from lmlab.lm import windows
from lmlab.models import save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer

CONTEXT, STRIDE = 48, 20


@pytest.fixture(scope="module")
def setup():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(1500)]
    long_doc = " ".join(rng.choice(words) for _ in range(900))
    short = [" ".join(rng.choice(words) for _ in range(n)) for n in (5, 30, 60)]
    tok = WordLevelTokenizer("word").train([" ".join(words)])
    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2,
                                                     n_heads=4, n_kv_heads=2, context_length=CONTEXT),
                       {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "unk_id": tok.unk_id}).eval()
    return lm, tok, [long_doc, *short]


def by_hand(lm, tok, docs, context: int = CONTEXT, stride: int = STRIDE) -> tuple[float, int]:
    """Total log-probability and token count, each window run alone through the model's forward."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for doc in docs:
            seq = [tok.start_id] + tok.encode(doc) + [tok.eos_id]
            for begin, end, first in windows(len(seq), context, stride):
                ids = torch.tensor([seq[begin:end]])
                logp = torch.log_softmax(lm(ids)[0][0, :-1].double(), dim=-1)
                picked = logp.gather(1, ids[0, 1:, None])[:, 0]
                total += float(picked[first - begin - 1:].sum())
                tokens += end - first
    return total, tokens


def test_long_document_equals_window_by_window_at_every_batch_size(setup, monkeypatch, no_progress):
    lm, tok, docs = setup
    seen = {"rows": 0, "logits": 0}
    score, logits = lm.score, lm.logits

    def counting_score(ids):
        seen["rows"] = max(seen["rows"], ids.shape[0])
        return score(ids)

    def counting_logits(hidden):
        out = logits(hidden)
        seen["logits"] = max(seen["logits"], out.numel())
        return out

    monkeypatch.setattr(lm, "score", counting_score)
    monkeypatch.setattr(lm, "logits", counting_logits)
    monkeypatch.setattr(neural, "SCORE_LOGITS_BUDGET", 4 * lm.vocab_size)  # four positions' logits at a time
    total, tokens = by_hand(lm, tok, docs)
    assert len(tok.encode(docs[0])) > 15 * CONTEXT
    for batch_size in (1, 3, 64):
        seen.update(rows=0, logits=0)
        result = evaluate_lm(lm, tok, from_texts(docs), batch_size=batch_size, stride=STRIDE)
        assert result.tokens == tokens
        assert result.total_logprob == pytest.approx(total, rel=1e-7)  # float32 windows, float64 sums
        assert seen["rows"] <= batch_size  # a long document's windows never make a larger batch
        # the stated bound: the budget (four positions' logits), or one position of every row when the batch is larger
        assert seen["logits"] <= max(4, batch_size) * lm.vocab_size
    assert result.perplexity == pytest.approx(math.exp(-total / tokens), rel=1e-6)


def test_a_shorter_context_scores_shorter_windows(setup, no_progress):
    lm, tok, docs = setup
    whole = evaluate_lm(lm, tok, from_texts(docs[1:3]))  # both fit in the model's context
    short = evaluate_lm(lm, tok, from_texts(docs[1:3]), context=16, stride=8)
    total, tokens = by_hand(lm, tok, docs[1:3], context=16, stride=8)
    assert short.tokens == whole.tokens == tokens and short.total_logprob != whole.total_logprob
    assert short.total_logprob == pytest.approx(total, rel=1e-7)
    with pytest.raises(ModelError, match="longer than the context of 16"):
        evaluate_lm(lm, tok, from_texts(docs[1:3]), context=16)
    with pytest.raises(Exception, match="longer than the model's 48 positions"):
        evaluate_lm(lm, tok, from_texts(docs), context=96, stride=8)


def test_running_out_of_memory_is_one_clear_error(setup, monkeypatch, no_progress):
    lm, tok, docs = setup

    def no_memory(ids):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 71000000000 bytes")

    monkeypatch.setattr(lm, "score", no_memory)
    with pytest.raises(ModelError, match=r"out of memory scoring 2 sequence\(s\) of up to 48 tokens.*--batch-size"):
        evaluate_lm(lm, tok, from_texts(docs), batch_size=2, stride=STRIDE)


def test_cli_context_and_stride(setup, tmp_path, capsys, no_progress):
    lm, tok, docs = setup
    folder = save_model_dir(tmp_path / "m", *lm.to_state(), tokenizer=tok)
    (tmp_path / "long.txt").write_text(docs[0] + "\n", encoding="utf-8")
    assert main(["eval", "perplexity", "--model", str(folder), "--data", str(tmp_path / "long.txt"),
                 "--context", "32", "--stride", "16", "--batch-size", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["context"] == 32 and result["stride"] == 16 and result["tokens"] == len(tok.encode(docs[0])) + 1
    assert main(["eval", "perplexity", "--model", str(folder), "--data", str(tmp_path / "long.txt")]) == 1
    assert "--stride" in capsys.readouterr().err
