"""Benchmark: n-gram estimation and loading against KenLM (lmplz, kenlm module) and NLTK, same run.

For PTB and WikiText-2 at orders 3 and 5 (modified Kneser-Ney): wall time, CPU time (user + sys) and
peak memory of ``lmlab ngram train … -o x.arpa`` and of ``lmplz -o N`` (both end to end, text in,
ARPA out, run as subprocesses under /usr/bin/time), interleaved (lmlab, lmplz, lmlab, …) for
``--rounds`` rounds after one warm-up each, medians and ratios, with the load average of each
round; test perplexities; scoring throughput of lmlab's vectorised ``score`` against the kenlm
module; at the highest order, loading lmplz's ARPA file with lmlab and with ``kenlm.Model``
(interleaved medians) and loading lmlab's compact model directory; NLTK's
``KneserNeyInterpolated`` on a slice (it is ~10^4 times slower, so it gets a small share).
The machine (CPU model, ISA, cores) is printed first. Prints JSON; the last line is one JSON
object with every figure.

    python bench/ngram.py [--quick] [--datasets ptb wikitext-2] [--orders 3 5] [--rounds 3]
    # LMLAB_DATA must point at the shared data; lmplz from LMPLZ or PATH
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmlab.core.machine import cpu_info  # noqa: E402
from lmlab.data import data_root, open_corpus  # noqa: E402
from lmlab.ngram import NgramLM  # noqa: E402
from lmlab.ngram.files import load_ngram, save_ngram  # noqa: E402
from lmlab.ngram.model import pad_rows  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402

DATASETS = {"ptb": ("ptb/ptb.train.txt", "ptb/ptb.test.txt"),
            "wikitext-2": ("wikitext-2/train.txt", "wikitext-2/test.txt")}


def timed(cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> dict:
    """Wall seconds, CPU seconds (user + sys) and peak resident memory (MB) of one subprocess, via GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, *cmd]
        with open(stdin or os.devnull, "rb") as fin, open(stdout or os.devnull, "wb") as fout:
            subprocess.run(full, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, check=True, cwd=REPO)
        wall, user, system, rss_kb = tf.read().split()[-4:]
    return {"seconds": float(wall), "cpu_seconds": round(float(user) + float(system), 2),
            "peak_mb": round(int(rss_kb) / 1024, 1)}


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def medians(rounds: list[dict], tool: str) -> dict:
    """Median of each figure of ``tool`` over the rounds."""
    return {k: round(statistics.median(r[tool][k] for r in rounds), 3) for k in rounds[0][tool]}


def interleaved(tools: dict, rounds: int) -> list[dict]:
    """``rounds`` rounds of every tool in turn (each a function returning a dict of figures), after
    one warm-up of each; each round records the load average when it began."""
    for run in tools.values():
        run()
    out = []
    for _ in range(rounds):
        measured = {"load": load_now()}
        for name, run in tools.items():
            measured[name] = run()
        out.append(measured)
    return out


def in_process_seconds(fn) -> dict:
    """Wall and CPU seconds of ``fn()`` in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def prepare_text(src: Path, dst: Path) -> Path:
    """The text both tools read: lmplz refuses a literal <unk>, so it becomes an ordinary word; blank
    lines (WikiText's paragraph breaks) are dropped, as lmlab's corpus reader does (lmplz would count
    each as an empty sentence)."""
    lines = src.read_text(encoding="utf-8").replace("<unk>", "UNKWORD").splitlines()
    dst.write_text("".join(line + "\n" for line in lines if line.strip()), encoding="utf-8")
    return dst


def perplexity(lm: NgramLM, tok, sentences: list[str]) -> tuple[float, float]:
    """(perplexity with </s>, tokens/s of the vectorised score over the whole test set as one stream)."""
    rows = [[tok.bos_id] + tok.encode(s) + [tok.eos_id] for s in sentences]
    lm.score_array(np.array([rows[0]]))  # builds the hashed index once
    ids, mask = pad_rows(rows, tok.eos_id)
    total = float(lm.score_array(ids)[mask].sum())
    tokens = int(mask.sum())
    stream = np.concatenate([np.array(r) for r in rows])[None, :]
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        lm.score_array(stream)
        best = min(best, time.perf_counter() - start)
    return math.exp(-total / tokens), stream.size / best


def kenlm_scoring(arpa: Path, sentences: list[str]) -> dict | None:
    try:
        import kenlm
    except ImportError:
        return None
    model = kenlm.Model(str(arpa))
    start = time.perf_counter()
    total = sum(model.score(s, bos=True, eos=True) for s in sentences)
    seconds = time.perf_counter() - start
    tokens = sum(len(s.split()) + 1 for s in sentences)
    return {"perplexity": 10 ** (-total / tokens), "tokens_per_s": tokens / seconds}


def bench_dataset(name: str, orders: list[int], work: Path, lmplz: str | None, rounds: int) -> dict:
    train_rel, test_rel = DATASETS[name]
    root = data_root()
    train_file = prepare_text(root / train_rel, work / f"{name}.train.txt")
    test_file = prepare_text(root / test_rel, work / f"{name}.test.txt")
    test = [s for s in test_file.read_text(encoding="utf-8").splitlines() if s.strip()]
    out: dict = {}
    for order in orders:
        arpa = work / f"{name}.{order}.arpa"
        ref_arpa = work / f"{name}.{order}.lmplz.arpa"
        tools = {"lmlab": lambda: timed([sys.executable, "-m", "lmlab", "ngram", "train", str(train_file),  # noqa: B023
                                         "--order", str(order), "--smoothing", "mkn", "-o", str(arpa), "--quiet"])}  # noqa: B023
        if lmplz:
            tools["lmplz"] = lambda: timed([lmplz, "-o", str(order), "-S", "20%", "-T", str(work)],  # noqa: B023
                                           stdin=train_file, stdout=ref_arpa)  # noqa: B023
        measured = interleaved(tools, rounds)
        row: dict = {"rounds": rounds, "load_per_round": [m["load"] for m in measured],
                     "lmlab_train": medians(measured, "lmlab")}
        if lmplz:
            row["lmplz_train"] = medians(measured, "lmplz")
            row["train_time_ratio_vs_lmplz"] = round(row["lmlab_train"]["seconds"] / row["lmplz_train"]["seconds"], 3)
            row["train_cpu_ratio_vs_lmplz"] = round(row["lmlab_train"]["cpu_seconds"]
                                                    / row["lmplz_train"]["cpu_seconds"], 3)
            row["peak_memory_ratio_vs_lmplz"] = round(row["lmlab_train"]["peak_mb"] / row["lmplz_train"]["peak_mb"], 3)
        lm, tok = load_ngram(arpa)
        row["lmlab_perplexity"], row["lmlab_tokens_per_s"] = perplexity(lm, tok, test)
        peer = kenlm_scoring(arpa, test)
        if peer:
            row["kenlm_module_on_lmlab_arpa"] = peer
            row["scoring_speed_vs_kenlm_module"] = row["lmlab_tokens_per_s"] / peer["tokens_per_s"]
        if lmplz:
            row["lmplz_perplexity"] = (kenlm_scoring(ref_arpa, test) or {}).get("perplexity")
        if order == max(orders):
            row.update(bench_loading(lm, tok, arpa, ref_arpa if lmplz else None, work / f"{name}.{order}.dir", rounds))
        out[f"order{order}"] = row
        print(json.dumps({name: {f"order{order}": row}}), flush=True)
    return out


def bench_loading(lm: NgramLM, tok, arpa: Path, ref_arpa: Path | None, directory: Path, rounds: int) -> dict:
    """Loading an ARPA file (lmplz's where there is one: both tools read the same file) with lmlab and
    with ``kenlm.Model``, and lmlab's model directory, interleaved; medians in seconds."""
    save_ngram(lm, tok, directory)
    source = ref_arpa or arpa
    tools = {"lmlab_arpa": lambda: in_process_seconds(lambda: load_ngram(source)),
             "lmlab_directory": lambda: in_process_seconds(lambda: load_ngram(directory))}
    try:
        import kenlm

        tools["kenlm_arpa"] = lambda: in_process_seconds(lambda: kenlm.Model(str(source)))
    except ImportError:
        print("ngram bench: the kenlm module (bench extra) is not installed: ARPA loading has no peer",
              file=sys.stderr)
    measured = interleaved(tools, rounds)
    row = {"arpa_loaded": "lmplz's" if ref_arpa else "lmlab's", "arpa_mb": round(source.stat().st_size / 1e6, 1),
           "load_rounds_load": [m["load"] for m in measured],
           "arpa_load": medians(measured, "lmlab_arpa"), "directory_load": medians(measured, "lmlab_directory")}
    row["arpa_load_seconds"], row["directory_load_seconds"] = row["arpa_load"]["seconds"], row["directory_load"]["seconds"]
    if "kenlm_arpa" not in tools:
        row["kenlm_arpa_load"] = "not measured: the kenlm module is not installed"
    else:
        row["kenlm_arpa_load"] = medians(measured, "kenlm_arpa")
        row["kenlm_arpa_load_seconds"] = row["kenlm_arpa_load"]["seconds"]
        row["arpa_load_ratio_vs_kenlm"] = round(row["arpa_load_seconds"] / row["kenlm_arpa_load_seconds"], 3)
        row["arpa_load_cpu_ratio_vs_kenlm"] = round(row["arpa_load"]["cpu_seconds"]
                                                    / row["kenlm_arpa_load"]["cpu_seconds"], 3)
        row["directory_load_ratio_vs_kenlm_arpa"] = round(row["directory_load_seconds"]
                                                          / row["kenlm_arpa_load_seconds"], 3)
    return row


def bench_nltk(slice_lines: int, score_tokens: int) -> dict | None:
    """NLTK KneserNeyInterpolated (order 3) against lmlab's kn on the same PTB slice."""
    try:
        from nltk.lm import KneserNeyInterpolated
        from nltk.lm.preprocessing import padded_everygram_pipeline
    except ImportError:
        return None
    lines = open_corpus("ptb:train")
    texts = []
    for line in lines:
        texts.append(line)
        if len(texts) == slice_lines:
            break
    start = time.perf_counter()
    tok = WordLevelTokenizer("word").train(texts)
    lm = NgramLM.fit_corpus(texts, tok, order=3, smoothing="kn")
    ours_fit = time.perf_counter() - start
    start = time.perf_counter()
    train, vocab = padded_everygram_pipeline(3, [t.split() for t in texts])
    ref = KneserNeyInterpolated(3)
    ref.fit(train, vocab)
    nltk_fit = time.perf_counter() - start
    test = [t.split() for t in list(open_corpus("ptb:test"))[:200]]
    pairs = [(s[i], tuple((["<s>", "<s>"] + s)[i:i + 2])) for s in test for i in range(len(s))][:score_tokens]
    start = time.perf_counter()
    for word, context in pairs:
        ref.score(word, context)
    nltk_rate = len(pairs) / (time.perf_counter() - start)
    _, ours_rate = perplexity(lm, tok, [" ".join(s) for s in test])
    # NLTK's fit only counts: its probabilities are computed on demand. lmlab's estimation computes the
    # probability of every n-gram, which NLTK would take (extrapolated from its measured rate):
    nltk_all = nltk_fit + sum(lm.sizes()) / nltk_rate
    return {"slice_lines": slice_lines, "lmlab_fit_seconds": ours_fit, "nltk_fit_seconds": nltk_fit,
            "fit_speedup_vs_nltk_counting_only": nltk_fit / ours_fit, "nltk_tokens_per_s": nltk_rate,
            "nltk_all_probabilities_seconds_extrapolated": nltk_all,
            "estimation_speedup_vs_nltk_extrapolated": nltk_all / ours_fit,
            "lmlab_tokens_per_s": ours_rate, "scoring_speedup_vs_nltk": ours_rate / nltk_rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="PTB only, order 3, one round")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--no-nltk", action="store_true", help="leave NLTK out")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.orders, args.rounds = ["ptb"], [3], 1
    lmplz = os.environ.get("LMPLZ") or shutil.which("lmplz")
    machine = cpu_info()
    print(json.dumps({"machine": machine}), flush=True)
    results: dict = {"machine": machine, "lmplz": lmplz, "published_ptb_5gram_kn_perplexity": 141.2,
                     "note": f"medians of {args.rounds} interleaved rounds (lmlab, lmplz, ...) after a warm-up of each; "
                             "training end to end (text in, ARPA out) as subprocesses, lmplz -S 20%"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.datasets:
            results[name] = bench_dataset(name, args.orders, work, lmplz, args.rounds)
    if not args.no_nltk:
        results["nltk"] = bench_nltk(2000 if args.quick else 5000, 300)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
