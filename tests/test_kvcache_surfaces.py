"""KV-cache policies where users meet them, on tiny random models: ``--kv-policy``/``--kv-budget`` on
generate, bench and serve (with per-request ``kv_policy``), ``lmlab eval longcontext`` (needle grid
with its heat map, RULER-style tasks, a stream's perplexity), and the stream's exactness."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.kvcache import cache_settings
from lmlab.models import save_model_dir
from lmlab.models.config import TransformerConfig
from lmlab.models.transformer import TransformerLM
from lmlab.tokenizers import WordLevelTokenizer
from tests.test_cli import run
from tests.test_kvcache_policies import banded, masked_forward

TEXT = ("the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! "
        "special magic number 0123456789 what is the mentioned in text above? var found all assigned "
        "question answer according chain variables value they are common words list most appear often top:\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = WordLevelTokenizer("char").train([TEXT])
    torch.manual_seed(0)
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4,
                                        n_kv_heads=2, d_ff=64, context_length=512)
    lm = TransformerLM(cfg, special_ids={"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                                         "unk_id": tok.unk_id}).eval()
    path = tmp_path_factory.mktemp("tiny") / "model"
    save_model_dir(path, *lm.to_state(), tokenizer=tok)
    corpus = tmp_path_factory.mktemp("corpus") / "hay.txt"
    corpus.write_text("\n".join([TEXT.replace(".", " ").replace("!", " ")] * 30))
    return lm, tok, str(path), str(corpus)


def test_generate_reports_the_bytes_the_cache_held(capsys, tiny):
    _, _, model, _ = tiny
    prompt = "the quick brown fox jumps over the lazy dog. " * 3
    args = ["generate", "--model", model, "--prompt", prompt, "--greedy", "--max-new-tokens", "6", "--json"]
    code, out, _ = run(capsys, *args)
    full = json.loads(out)
    code2, out2, _ = run(capsys, *args, "--kv-policy", "snapkv", "--kv-budget", "32", "--kv-window", "8")
    snap = json.loads(out2)
    assert code == code2 == 0
    assert snap["settings"]["kv_cache"] == {"policy": "snapkv", "budget": 32, "window": 8, "kernel": 5}
    assert 0 < snap["kv_cache_bytes"] < full["kv_cache_bytes"] / 2
    _, out3, _ = run(capsys, *args, "--kv-policy", "h2o", "--kv-budget", "0.25", "--kv-quant", "int8")
    assert json.loads(out3)["settings"]["kv_cache"]["quantization"]["bits"] == 8


@pytest.mark.parametrize("flags, message", [
    (["--kv-policy", "streaming", "--kv-budget", "8", "--kv-sinks", "4", "--kv-window", "8"], "sinks + window"),
    (["--kv-policy", "window", "--kv-budget", "16", "--kv-beta", "3"], "does not take beta"),
    (["--kv-budget", "16"], "keeps every token"),
    (["--kv-policy", "snapkv", "--kv-budget", "0.01"], "observation window"),
])
def test_bad_cache_flags_are_one_line(capsys, tiny, flags, message):
    _, _, model, _ = tiny
    code, _, err = run(capsys, "generate", "--model", model, "--prompt", "the quick brown fox", "--greedy",
                       "--max-new-tokens", "2", *flags)
    assert code != 0 and message in err and "Traceback" not in err


def test_bench_takes_the_cache_flags(capsys, tiny):
    _, _, model, _ = tiny
    code, out, _ = run(capsys, "bench", "--model", model, "--batch-sizes", "2", "--prompt-tokens", "40",
                       "--new-tokens", "4", "--repeats", "1", "--warmup", "0", "--kv-policy", "window",
                       "--kv-budget", "16", "--json")
    result = json.loads(out)
    assert code == 0 and result["settings"]["kv_cache"]["policy"] == "window"
    assert 0 < result["results"][0]["kv_cache_bytes"] < 2 * 2 * 2 * 2 * 44 * 8 * 4  # less than the full cache


def test_eval_longcontext_needle_grid_heat_map_and_ruler(capsys, tiny, tmp_path):
    _, _, model, corpus = tiny
    plot = tmp_path / "needle.png"
    code, out, _ = run(capsys, "eval", "longcontext", "--model", model, "--task", "needle", "--lengths", "256,320",
                       "--depths", "0,1", "--trials", "1", "--haystack", corpus, "--kv-policy", "h2o",
                       "--kv-budget", "0.5", "--plot", str(plot), "--json")
    result = json.loads(out)
    assert code == 0 and len(result["grid"]) == 2 and len(result["grid"][0]) == 2
    assert 0 <= result["accuracy"] <= 1 and result["kv_cache"]["policy"] == "h2o"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert all(len(r["answer"]) for r in result["records"])
    code, out, _ = run(capsys, "eval", "longcontext", "--model", model, "--task", "ruler", "--lengths", "440",
                       "--samples", "1", "--haystack", corpus, "--json")
    result = json.loads(out)
    assert code == 0 and set(result["tasks"]) == {"multikey", "variables", "common_words"}
    assert 0 <= result["score"] <= 1


def test_eval_longcontext_stream_goes_past_the_context_only_with_a_bounded_cache(capsys, tiny, tmp_path):
    _, _, model, corpus = tiny
    args = ["eval", "longcontext", "--model", model, "--task", "stream", "--data", corpus, "--tokens", "700",
            "--chunk", "32", "--segment", "256", "--json"]
    code, out, _ = run(capsys, *args)
    full = json.loads(out)
    assert code == 0 and full["stopped_at"] == 512 and full["scored"] == 511
    code, out, _ = run(capsys, *args, "--kv-policy", "streaming", "--kv-budget", "64")
    streaming = json.loads(out)
    assert code == 0 and streaming["stopped_at"] is None and streaming["scored"] == 699
    assert [s["start"] for s in streaming["segments"]] == [1, 257, 513]
    assert streaming["kv_cache_bytes"] < full["kv_cache_bytes"]
    code, _, err = run(capsys, *args, "--kv-policy", "snapkv", "--kv-budget", "64")
    assert code != 0 and "evicts as it goes" in err


def test_eval_longcontext_extends_a_rope_context(capsys, tiny):
    _, _, model, corpus = tiny
    args = ["eval", "longcontext", "--model", model, "--task", "stream", "--data", corpus, "--tokens", "700",
            "--chunk", "64", "--segment", "256", "--json"]
    code, out, _ = run(capsys, *args, "--rope-scaling", "2", "--rope-scaling-type", "yarn")
    extended = json.loads(out)
    assert code == 0 and extended["stopped_at"] is None and extended["scored"] == 699
    assert "yarn ×2" in extended["model"]
    code, _, err = run(capsys, *args, "--rope-scaling", "0.5")
    assert code != 0 and "factor" in err


def test_stream_perplexity_is_exact():
    from lmlab.eval.longcontext import stream_perplexity

    torch.manual_seed(0)
    lm = TransformerLM(TransformerConfig.from_preset("llama", vocab_size=30, d_model=32, n_layers=2, n_heads=4,
                                                     n_kv_heads=2, context_length=256)).eval()
    ids = torch.randint(0, 30, (60,)).tolist()
    nll = -torch.log_softmax(masked_forward(lm, ids, banded(60, 60, 60)), -1)[:-1].gather(
        1, torch.tensor(ids[1:]).unsqueeze(1)).mean()
    whole = stream_perplexity(lm, ids, chunk=7)
    assert math.isclose(whole["perplexity"], math.exp(float(nll)), rel_tol=1e-5)
    window = stream_perplexity(lm, ids, chunk=1, kv_cache=cache_settings("window", 9))
    banded_nll = -torch.log_softmax(masked_forward(lm, ids, banded(1, 60, 9)), -1)[:-1].gather(
        1, torch.tensor(ids[1:]).unsqueeze(1)).mean()
    assert math.isclose(window["perplexity"], math.exp(float(banded_nll)), rel_tol=1e-5)


def test_server_applies_its_cache_and_each_requests_policy(tiny):
    from lmlab.serve import create_app
    from lmlab.serve.background import background
    from tests.test_serve import raw

    lm, tok, _, _ = tiny
    app = create_app(lm, tok, model_id="tiny", kv_cache=cache_settings("window", 16, quant="int8"))
    prompt = "the quick brown fox jumps over the lazy dog. " * 2
    with background(app) as url:
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 5, "temperature": 0}
        status, reply = raw(url, "POST", "/v1/completions", body)
        assert status == 200 and reply["choices"][0]["text"] is not None
        status, reply = raw(url, "POST", "/v1/completions", {**body, "kv_policy": "streaming", "kv_budget": 24,
                                                             "max_tokens": 600})
        assert status == 200  # positions stay in the cache: past the 512-token context
        status, reply = raw(url, "POST", "/v1/completions", {**body, "kv_policy": "snapkv", "kv_budget": 4})
        assert status == 400 and reply["error"]["param"] == "kv_policy"
        status, reply = raw(url, "POST", "/v1/completions", {**body, "kv_policy": "nope"})
        assert status == 400 and "kv policy" in reply["error"]["message"]


def test_eval_harness_applies_the_cache_to_generated_answers_and_refuses_it_for_scoring(tiny):
    from lmlab.core.errors import ConfigError
    from lmlab.eval.requests import RequestRunner

    lm, tok, _, _ = tiny
    from lmlab.generate.engine import Engine, Request
    from lmlab.generate.settings import DecodingSettings

    window = cache_settings("window", 8)
    runner = RequestRunner(lm, tok, kv_cache=window)
    context = "the quick brown fox jumps over the lazy dog. pack my box"
    settings = DecodingSettings(greedy=True, max_new_tokens=12, kv_cache=window)
    expected = Engine(lm, tok, settings=settings).generate([Request([runner.prefix, *tok.encode(context)])])[0]
    assert runner.generate_many([context], max_new_tokens=12) == [expected.text]
    assert expected.stats.kv_cache_bytes < 2 * 2 * 2 * 8 * (len(context) + 13) * 4  # the window, not the context
    with pytest.raises(ConfigError, match="generated answers"):
        runner.loglikelihood([["the quick", " brown"]])
