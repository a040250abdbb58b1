"""``lmlab bench`` on tiny random models: every figure present, consistent and honest about the machine."""

from __future__ import annotations

import json

import pytest
import torch

from lmlab.eval.efficiency import machine_info, measure_generation, random_prompts
from lmlab.models import save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.ngram import UnigramLM
from lmlab.tokenizers import WordLevelTokenizer
from tests.test_cli import run

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = WordLevelTokenizer("char").train([TEXT])
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                        n_kv_heads=2, d_ff=64, context_length=64)
    lm = TransformerLM(cfg, special_ids={"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                                         "unk_id": tok.unk_id}).eval()
    with torch.no_grad():  # make the end-of-sequence id the likeliest token everywhere
        lm.head.weight[tok.eos_id] = lm.final_norm.weight.sign() * 5
    path = tmp_path_factory.mktemp("tiny") / "model"
    save_model_dir(path, *lm.to_state(), tokenizer=tok)
    return lm, tok, str(path)


def test_every_request_makes_exactly_the_new_tokens_even_past_eos(tiny):
    lm, _, _ = tiny
    first = lm.head(lm.final_norm(torch.ones(1, 32))).argmax().item()
    assert first == lm.eos_id  # greedy decoding would stop at once if EOS counted
    rows = measure_generation(lm, batch_sizes=[1, 3], prompt_tokens=6, new_tokens=5, repeats=1, warmup=0)
    assert [r["batch_size"] for r in rows] == [1, 3]
    for r in rows:
        assert r["generated_tokens"] == 5 * r["batch_size"]
        assert 0 < r["time_to_first_token_s"] <= r["total_s"]
        assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert r["decode_tokens_per_s_per_request"] == pytest.approx(r["decode_tokens_per_s"] / r["batch_size"])
        assert r["throughput_tokens_per_s"] == pytest.approx(r["generated_tokens"] / r["total_s"])


def test_random_prompts_avoid_special_ids_and_are_seeded(tiny):
    lm, _, _ = tiny
    prompts = random_prompts(lm, 4, 50, seed=3)
    special = {lm.bos_id, lm.eos_id, lm.pad_id, lm.unk_id}
    assert all(len(p) == 50 and not special & set(p) for p in prompts)
    assert prompts == random_prompts(lm, 4, 50, seed=3) and prompts != random_prompts(lm, 4, 50, seed=4)


def test_machine_info_names_the_setup(tiny):
    lm, _, _ = tiny
    info = machine_info(lm)
    assert info["torch"] == torch.__version__ and info["threads"] == torch.get_num_threads()
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["cores"] >= 1
    assert info["parameters"] == sum(p.numel() for p in lm.parameters()) and info["cpu"]


def test_bench_cli_json(capsys, tiny):
    _, _, path = tiny
    code, out, _ = run(capsys, "bench", "--model", path, "--batch-sizes", "1,2", "--prompt-tokens", "5",
                       "--new-tokens", "3", "--repeats", "1", "--warmup", "0", "--dtype", "bfloat16", "--json")
    result = json.loads(out)
    assert code == 0 and result["machine"]["dtype"] == "bfloat16"
    assert result["settings"]["batch_sizes"] == [1, 2] and result["settings"]["new_tokens"] == 3
    assert [r["generated_tokens"] for r in result["results"]] == [3, 6]
    assert all(r["peak_memory_mb"] is None or r["peak_memory_mb"] > 0 for r in result["results"])
    code, out, _ = run(capsys, "bench", "--model", path, "--batch-sizes", "2", "--prompt-tokens", "4",
                       "--new-tokens", "2", "--repeats", "1", "--warmup", "0")
    assert code == 0 and "TTFT ms" in out and "machine" in out


def test_bench_cli_any_protocol_model(capsys, tmp_path):
    tok = WordLevelTokenizer("word").train([TEXT])
    lm = UnigramLM.fit_corpus([TEXT], tok)
    save_model_dir(tmp_path / "uni", *lm.to_state(), tokenizer=tok)
    code, out, _ = run(capsys, "bench", "--model", str(tmp_path / "uni"), "--batch-sizes", "2",
                       "--prompt-tokens", "3", "--new-tokens", "4", "--repeats", "1", "--warmup", "0", "--json")
    result = json.loads(out)
    assert code == 0 and result["results"][0]["generated_tokens"] == 8
    assert result["machine"]["dtype"] == "n/a"


def test_bench_cli_bad_input(capsys, tiny):
    _, _, path = tiny
    code, _, err = run(capsys, "bench", "--model", path, "--batch-sizes", "x")
    assert code == 1 and "--batch-sizes" in err
    code, _, err = run(capsys, "bench", "--model", path, "--new-tokens", "0", "--repeats", "1")
    assert code == 1 and "--new-tokens = 0" in err
    code, _, err = run(capsys, "bench", "--model", str(path) + "-missing")
    assert code == 1 and "model not found" in err
