"""Benchmark: training time and encoding throughput of lmlab's tokenizers against their peers.

On WikiText-2 train: training time (text in, tokenizer out) of BPE (▁), byte-level BPE,
WordPiece (likelihood score; ``wordpiece-count``: HF's count-based variant) and Unigram at each
vocabulary size against HF ``tokenizers`` (one thread) and ``sentencepiece`` (BPE, Unigram; one
thread), in ``--rounds`` interleaved rounds (ours, HF, sentencepiece, ours, …) after one
warm-up training of every kind (numba kernels load from their cache then). Each row gives the
median wall and CPU seconds of each tool and ``ratio_vs_hf`` = our median / HF's median (wall;
``ratio_vs_hf_cpu`` on CPU time, steadier on a shared machine), with the load average of each
round. Then encoding throughput (MB/s) of the trained byte-level BPE against HF ``tokenizers``
(one thread, batched) and ``tiktoken`` built offline from the same ranks, and the quality
table: tokens per byte (and per word) on WikiText-2 test of each algorithm at the first
vocabulary size, next to SmolLM2's tokenizer. The CPU model and ISA come first. One JSON line
per trainer; the last line printed is one JSON object with everything.

    python bench/tokenization.py [--sizes 8000 32000] [--kinds bpe byte-bpe wordpiece wordpiece-count unigram]
                                 [--rounds 3] [--lines N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # HF tokenizers on one thread
os.environ["RAYON_NUM_THREADS"] = "1"
# this file is named like the HF package: drop its folder from the path so `import tokenizers` finds HF's
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from lmlab.core.machine import cpu_info  # noqa: E402
from lmlab.core.progress import set_quiet  # noqa: E402
from lmlab.data import data_root  # noqa: E402
from lmlab.tokenizers import load  # noqa: E402
from lmlab.tokenizers.decoders import token_bytes  # noqa: E402
from lmlab.tokenizers.pre_tokenizers import GPT2_PATTERN  # noqa: E402
from lmlab.tokenizers.stats import tokenizer_stats  # noqa: E402
from lmlab.tokenizers.trainers import train_tokenizer  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def timed_cpu(fn) -> tuple[object, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def ours_train(kind: str, lines: list[str], vocab_size: int):
    if kind == "wordpiece-count":
        return train_tokenizer("wordpiece", lines, vocab_size, wordpiece_score="count")
    return train_tokenizer(kind, lines, vocab_size)


def hf_train(kind: str, lines: list[str], vocab_size: int) -> tuple[float, float]:
    """HF tokenizers' training (wall, CPU seconds); both WordPiece kinds compare with its WordPiece trainer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if kind == "byte-bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                      show_progress=False)
    elif kind in ("wordpiece", "wordpiece-count"):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, show_progress=False,
                                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, show_progress=False, unk_token="<unk>",
                                          special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    _, wall, cpu = timed_cpu(lambda: tok.train_from_iterator(lines, trainer))
    return wall, cpu


def spm_train(kind: str, path: Path, vocab_size: int, workdir: str) -> tuple[float, float] | None:
    try:
        import sentencepiece as spm
    except ImportError:
        return None
    if kind not in ("bpe", "unigram"):
        return None
    args = dict(input=str(path), model_prefix=f"{workdir}/spm_{kind}_{vocab_size}", vocab_size=vocab_size,
                model_type=kind, num_threads=1, character_coverage=1.0, minloglevel=2, hard_vocab_limit=False,
                max_sentence_length=100000)
    try:
        _, wall, cpu = timed_cpu(lambda: spm.SentencePieceTrainer.train(**args))
    except RuntimeError as exc:  # e.g. vocabulary larger than the corpus allows
        print(f"sentencepiece {kind} {vocab_size}: {exc}", file=sys.stderr)
        return None
    return wall, cpu


def median_row(kind: str, size: int, rounds: list[dict]) -> dict:
    """Medians over the interleaved rounds, and our ratios against each peer."""
    row: dict = {"kind": kind, "vocab_size": size, "rounds": len(rounds),
                 "load_per_round": [r["load"] for r in rounds]}
    for tool in ("ours", "hf_tokenizers", "sentencepiece"):
        if tool in rounds[0]:
            row[f"{tool}_s"] = statistics.median(r[tool][0] for r in rounds)
            row[f"{tool}_cpu_s"] = statistics.median(r[tool][1] for r in rounds)
    for tool, name in (("hf_tokenizers", "hf"), ("sentencepiece", "sentencepiece")):
        if f"{tool}_s" in row:
            row[f"ratio_vs_{name}"] = row["ours_s"] / row[f"{tool}_s"]
            row[f"ratio_vs_{name}_cpu"] = row["ours_cpu_s"] / row[f"{tool}_cpu_s"]
    return row


def encode_throughput(tok_path: Path, lines: list[str], n_bytes: int) -> dict:
    ours = load(tok_path)  # fresh: the piece cache starts empty
    ours_ids, ours_s = timed(lambda: [ours.encode(t) for t in lines])
    out = {"ours_mb_s": n_bytes / ours_s / 1e6}
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return out
    hf = Tokenizer.from_file(str(tok_path))
    encs, hf_s = timed(lambda: hf.encode_batch(lines, add_special_tokens=False))
    out["hf_tokenizers_mb_s"] = n_bytes / hf_s / 1e6
    out["ratio_vs_hf"] = out["ours_mb_s"] / out["hf_tokenizers_mb_s"]
    out["identical_to_hf"] = all(e.ids == o for e, o in zip(encs, ours_ids, strict=True))
    try:
        import tiktoken
    except ImportError:
        return out
    special = set(ours.special_ids)
    ranks = {token_bytes(ours.id_to_token(i)): i for i in range(ours.vocab_size) if i not in special}
    enc = tiktoken.Encoding("lmlab-bench", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    tt_ids, tt_s = timed(lambda: enc.encode_ordinary_batch(lines, num_threads=1))
    out["tiktoken_mb_s"] = n_bytes / tt_s / 1e6
    out["ratio_vs_tiktoken"] = out["ours_mb_s"] / out["tiktoken_mb_s"]
    out["identical_to_tiktoken"] = tt_ids == ours_ids
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 32000])
    parser.add_argument("--kinds", nargs="+", default=["bpe", "byte-bpe", "wordpiece", "wordpiece-count", "unigram"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per row (median)")
    parser.add_argument("--lines", type=int, default=None, help="use only the first N lines of train")
    args = parser.parse_args()
    set_quiet(True)
    machine = cpu_info()
    print(json.dumps({"machine": machine}), file=sys.stderr, flush=True)
    path = data_root() / "wikitext-2" / "train.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    if args.lines:
        lines = lines[:args.lines]
    n_bytes = sum(len(t.encode("utf-8")) for t in lines)
    test = (data_root() / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
    result: dict = {"machine": machine, "corpus": f"wikitext-2 train ({len(lines)} lines, {n_bytes / 1e6:.1f} MB)",
                    "training": [], "quality_on_test": [],
                    "note": "HF tokenizers with TOKENIZERS_PARALLELISM=false (1 thread); sentencepiece num_threads=1; "
                            f"medians of {args.rounds} interleaved rounds after a warm-up of every kind"}
    try:
        import tokenizers  # noqa: F401
        have_hf = True
    except ImportError:
        have_hf = False
    for kind in args.kinds:  # warm-up: numba kernels compile (first run ever) or load from their cache
        ours_train(kind, lines[:200], 300)
    with tempfile.TemporaryDirectory() as workdir:
        corpus_file = Path(workdir) / "train.txt"
        corpus_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        encode_path = None
        for size in args.sizes:
            for kind in args.kinds:
                rounds = []
                for _ in range(args.rounds):
                    measured: dict = {"load": round(os.getloadavg()[0], 2)}
                    tok, wall, cpu = timed_cpu(lambda: ours_train(kind, lines, size))  # noqa: B023
                    measured["ours"] = (wall, cpu)
                    if have_hf:
                        measured["hf_tokenizers"] = hf_train(kind, lines, size)
                    spm = spm_train(kind, corpus_file, size, workdir)
                    if spm is not None:
                        measured["sentencepiece"] = spm
                    rounds.append(measured)
                row = median_row(kind, size, rounds)
                if not have_hf:
                    row["hf_tokenizers_s"] = "not installed: not measured"
                saved = tok.save(Path(workdir) / f"{kind}_{size}.json")
                if kind == "byte-bpe" and encode_path is None:
                    encode_path = saved
                if size == args.sizes[0]:
                    result["quality_on_test"].append({"tokenizer": f"{kind} {size}", **tokenizer_stats(tok, test)})
                print(json.dumps(row), flush=True)
                result["training"].append(row)
        if encode_path is not None:
            result["encode_byte_bpe"] = {"tokenizer": encode_path.name, **encode_throughput(encode_path, lines, n_bytes)}
        smol = Path(workdir) / "smollm2.json"
        smollm2 = load("smollm2-135m-instruct")
        smollm2.save(smol)
        result["quality_on_test"].append({"tokenizer": "smollm2-135m-instruct", **tokenizer_stats(smollm2, test)})
        result["encode_smollm2"] = {"tokenizer": "smollm2-135m-instruct",
                                    **{k: v for k, v in encode_throughput(smol, lines, n_bytes).items()
                                       if "tiktoken" not in k}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
