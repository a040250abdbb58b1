"""ARC-Easy per-choice log-likelihoods: lmlab's harness against lm-evaluation-harness.

Both score the first items of the shared ARC-Easy test file, zero-shot, on one tiny random LLaMA that
``transformers`` saved with a byte-level BPE that the ``tokenizers`` library trained on ARC-Easy's
train questions. lmlab loads that directory with its own importer and tokenizer; lm-eval runs its HF
backend on ``transformers``' own loading of it, with a local copy of its ``arc_easy`` task (the same
prompt, choices and target). Both start a context with BOS only when it is empty (lm-eval's rule, which
``--start empty`` selects in ``lmlab eval task``). Every choice's log-likelihood must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.eval.harness import evaluate_task
from lmlab.eval.requests import RequestRunner
from lmlab.eval.tasks import load_task
from lmlab.models import load_model
from tests.conftest import need_data

ITEMS = 24

TASK_YAML = """task: arc_easy_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    """A random 2-layer LLaMA and a 400-id byte-level BPE, saved by transformers as one directory."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    train = need_data("arc", "ARC-Easy-train.jsonl")
    texts = []
    for line in train.read_text(encoding="utf-8").splitlines()[:600]:
        record = json.loads(line)
        texts += [record["question"], *record["choices"]["text"]]
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                               eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # spread the log-likelihoods beyond the 0.02-init's near-uniform ones
        model.lm_head.weight.mul_(30)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_arc_easy_loglikelihoods_equal_lm_eval(tiny_llama_dir, tmp_path, monkeypatch, no_progress):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items_file = need_data("arc", "ARC-Easy-test.jsonl")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    lm, tokenizer = load_model(tiny_llama_dir)
    ours = evaluate_task(load_task("arc_easy"), RequestRunner(lm, tokenizer, batch_size=8, start_always=False),
                         limit=ITEMS)

    (tmp_path / "arc_easy_local.yaml").write_text(TASK_YAML.format(path=items_file), encoding="utf-8")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float32).eval()
    peer = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(tiny_llama_dir),
                                              batch_size=8),
                                   tasks=["arc_easy_local"], task_manager=TaskManager(include_path=str(tmp_path)),
                                   limit=ITEMS, log_samples=True, num_fewshot=0)
    samples = sorted(peer["samples"]["arc_easy_local"], key=lambda s: s["doc_id"])
    assert ours["n"] == len(samples) == ITEMS
    choices = 0
    for sample, item in zip(samples, ours["items"], strict=True):
        theirs = [r[0] for r in sample["filtered_resps"]]
        assert item["label"] == int(sample["target"])
        np.testing.assert_allclose(item["logits"], theirs, atol=2e-4, rtol=0)
        choices += len(theirs)
    assert choices >= 3 * ITEMS
    spread = np.ptp([ll for item in ours["items"] for ll in item["logits"]])
    assert spread > 10  # the choices' scores differ by far more than the tolerance
    metrics = peer["results"]["arc_easy_local"]
    assert ours["metrics"]["acc"] == pytest.approx(metrics["acc,none"])
    assert ours["metrics"]["acc_norm"] == pytest.approx(metrics["acc_norm,none"])
