"""Serving throughput: ``lmlab serve`` (continuous batching) with 1, 4 and 16 concurrent clients on
SmolLM2-135M-Instruct, against ``transformers`` ``generate`` at batch 1 and batch 16 (static
batches, in process, no HTTP) on the same weights.

The server runs as ``python -m lmlab serve --threads N`` in a subprocess; each client thread sends
``--requests`` streaming chat requests one after another through the official ``openai`` client
(greedy, EOS banned with ``logit_bias`` so every answer is exactly ``--new-tokens`` long).
Aggregate tokens/s = all completion tokens / wall time. Time to first token of a burst: the median
over each client's first request, which all arrive at once. Targets: 16 clients ≥ 5× one client's
aggregate tokens/s, and the 16-client burst's median time to first token ≤ 10× one client's
(prompts are prefilled first come, first served, several per forward pass: an ideal queue gives
about 8.5×).
Greedy answers to the same question must be identical at every concurrency (rows batched with
others compute what they would alone). The server is stopped before transformers is timed.
The last line is one JSON object. Run: python bench/serve.py [--threads 2] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(ROOT))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

MODEL = "smollm2-135m-instruct"
QUESTIONS = ["Explain in a few sentences why the sky is blue.", "Write a short poem about the sea.",
             "What are three tips for learning a new language?", "Describe how a bicycle works.",
             "Why do leaves change colour in autumn?", "Give me a recipe for pancakes.",
             "What is the difference between weather and climate?", "Summarise the story of Romeo and Juliet."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(threads: int, max_batch: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "lmlab", "serve", "--model", MODEL, "--port", str(port), "--threads", str(threads),
           "--max-batch", str(max_batch), "--embedding-model", "none", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
    proc.kill()
    raise SystemExit("the server did not start in 300 s")


def one_request(client, question: str, new: int, bias: dict) -> dict:
    start = time.perf_counter()
    first, text, tokens = None, "", 0
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            max_tokens=new, temperature=0, logit_bias=bias, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return {"question": question, "text": text, "tokens": tokens, "ttft_s": (first or end) - start,
            "latency_s": end - start}


def drive(url: str, clients: int, requests: int, new: int, bias: dict) -> dict:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    results: list[dict] = []
    lock = threading.Lock()

    def worker(c: int) -> None:
        for r in range(requests):
            out = one_request(client, QUESTIONS[(c + r * clients) % len(QUESTIONS)], new, bias)
            with lock:
                results.append({**out, "round": r})

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "completion_tokens": tokens, "wall_s": round(wall, 3),
            "aggregate_tokens_per_s": round(tokens / wall, 3),
            "median_ttft_s": round(statistics.median(r["ttft_s"] for r in results), 3),
            "burst_median_ttft_s": round(statistics.median(r["ttft_s"] for r in results if r["round"] == 0), 3),
            "median_latency_s": round(statistics.median(r["latency_s"] for r in results), 3),
            "answers": {r["question"]: r["text"] for r in results}}


def transformers_batches(sizes: list[int], new: int, threads: int) -> dict:
    """transformers' generate on the same GGUF weights: ``batch`` chat prompts, left-padded, greedy."""
    import transformers

    from lmlab.generate.chat_template import chat_prompt
    from lmlab.models.gguf_import import read_gguf
    from lmlab.tokenizers import load, smollm2_gguf

    torch.set_num_threads(threads)
    tok = load(MODEL)
    tok.chat_template = read_gguf(smollm2_gguf()).get("tokenizer.chat_template")
    path = smollm2_gguf()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    out = {}
    for batch in sizes:
        prompts = [chat_prompt(tok, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
                   for i in range(batch)]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            hf.generate(ids[:, -8:], attention_mask=mask[:, -8:], max_new_tokens=2, do_sample=False, pad_token_id=0)
            start = time.perf_counter()
            gen = hf.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                              pad_token_id=0)
        wall = time.perf_counter() - start
        tokens = (gen.shape[1] - width) * batch
        out[f"batch_{batch}"] = {"batch": batch, "completion_tokens": tokens, "wall_s": round(wall, 3),
                                 "aggregate_tokens_per_s": round(tokens / wall, 3)}
    out["transformers"] = transformers.__version__
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server (and of transformers)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=2, help="requests each client sends, one after another")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--no-peer", action="store_true", help="skip transformers")
    args = ap.parse_args()
    from lmlab.tokenizers import load

    eos = load(MODEL).eos_id
    bias = {str(eos): -100}
    levels = [int(c) for c in args.clients.split(",")]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "lmlab-bench-serve.log"
    proc, url = start_server(args.threads, max(levels), log)
    try:
        drive(url, 1, 1, 4, bias)  # warm-up
        runs = [drive(url, c, args.requests, args.new_tokens, bias) for c in levels]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    base = runs[0]["aggregate_tokens_per_s"]
    reference = runs[0]["answers"]
    identical = all(answer == reference[q] for run in runs for q, answer in run["answers"].items() if q in reference)
    result = {"server": {f"clients_{r['clients']}": {k: v for k, v in r.items() if k != "answers"} for r in runs}}
    for r in runs:
        result["server"][f"clients_{r['clients']}"]["ratio_to_1_client"] = round(r["aggregate_tokens_per_s"] / base, 3)
        result["server"][f"clients_{r['clients']}"]["burst_ttft_ratio_to_1_client"] = round(
            r["burst_median_ttft_s"] / runs[0]["burst_median_ttft_s"], 3)
    result["greedy_answers_identical_across_concurrency"] = identical
    top = result["server"].get("clients_16", {})
    result["target_16_clients_at_least_5x"] = top.get("ratio_to_1_client", 0) >= 5.0
    result["target_burst_ttft_at_most_10x"] = 0 < top.get("burst_ttft_ratio_to_1_client", 99) <= 10.0
    if not args.no_peer:
        peer = transformers_batches([1, max(levels)], args.new_tokens, args.threads)
        result["transformers_generate"] = peer
        top = f"clients_{max(levels)}"
        result["ratio_server_to_transformers_same_concurrency"] = round(
            result["server"][top]["aggregate_tokens_per_s"] / peer[f"batch_{max(levels)}"]["aggregate_tokens_per_s"], 3)
        result["ratio_server_1_client_to_transformers_batch_1"] = round(
            base / peer["batch_1"]["aggregate_tokens_per_s"], 3)
    result["settings"] = {"threads": args.threads, "new_tokens": args.new_tokens, "requests_per_client": args.requests,
                          "torch": torch.__version__, "log": str(log), "load_average": os.getloadavg()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
