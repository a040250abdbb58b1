"""Benchmark: training time and encoding throughput of lmlab's tokenizers against their peers.

On WikiText-2 train: training time of BPE (▁), byte-level BPE, WordPiece and Unigram at each
vocabulary size against HF ``tokenizers`` (one thread) and ``sentencepiece`` (BPE, Unigram; one
thread); encoding throughput (MB/s) of the trained byte-level BPE against HF ``tokenizers``
(one thread, batched) and ``tiktoken`` built offline from the same ranks. Peers are measured
in the same run; ratios are ours / theirs for time and ours / theirs for throughput. Also the
quality table: tokens per byte (and per word) on WikiText-2 test of each algorithm at the
first vocabulary size, next to SmolLM2's tokenizer. The last line printed is one JSON object.

    python bench/tokenization.py [--sizes 8000 32000] [--kinds bpe byte-bpe wordpiece unigram] [--lines N]
"""

from __future__ import annotations

import argparse
import json
import os
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


def hf_train(kind: str, lines: list[str], vocab_size: int) -> float:
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
    elif kind == "wordpiece":
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
    _, seconds = timed(lambda: tok.train_from_iterator(lines, trainer))
    return seconds


def spm_train(kind: str, path: Path, vocab_size: int, workdir: str) -> float | None:
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
        _, seconds = timed(lambda: spm.SentencePieceTrainer.train(**args))
    except RuntimeError as exc:  # e.g. vocabulary larger than the corpus allows
        print(f"sentencepiece {kind} {vocab_size}: {exc}", file=sys.stderr)
        return None
    return seconds


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
    parser.add_argument("--kinds", nargs="+", default=["bpe", "byte-bpe", "wordpiece", "unigram"])
    parser.add_argument("--lines", type=int, default=None, help="use only the first N lines of train")
    args = parser.parse_args()
    set_quiet(True)
    path = data_root() / "wikitext-2" / "train.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    if args.lines:
        lines = lines[:args.lines]
    n_bytes = sum(len(t.encode("utf-8")) for t in lines)
    test = (data_root() / "wikitext-2" / "test.txt").read_text(encoding="utf-8").splitlines()
    result: dict = {"corpus": f"wikitext-2 train ({len(lines)} lines, {n_bytes / 1e6:.1f} MB)", "training": [],
                    "quality_on_test": [],
                    "note": "HF tokenizers with TOKENIZERS_PARALLELISM=false (1 thread); sentencepiece num_threads=1"}
    with tempfile.TemporaryDirectory() as workdir:
        corpus_file = Path(workdir) / "train.txt"
        corpus_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        encode_path = None
        for size in args.sizes:
            for kind in args.kinds:
                tok, ours_s = timed(lambda: train_tokenizer(kind, lines, size))  # noqa: B023
                row = {"kind": kind, "vocab_size": size, "ours_s": ours_s}
                saved = tok.save(Path(workdir) / f"{kind}_{size}.json")
                if kind == "byte-bpe" and encode_path is None:
                    encode_path = saved
                if size == args.sizes[0]:
                    result["quality_on_test"].append({"tokenizer": f"{kind} {size}", **tokenizer_stats(tok, test)})
                try:
                    row["hf_tokenizers_s"] = hf_train(kind, lines, size)
                    row["ratio_vs_hf"] = ours_s / row["hf_tokenizers_s"]
                except ImportError:
                    row["hf_tokenizers_s"] = "not installed: not measured"
                spm_s = spm_train(kind, corpus_file, size, workdir)
                if spm_s is not None:
                    row["sentencepiece_s"] = spm_s
                    row["ratio_vs_sentencepiece"] = ours_s / spm_s
                print(json.dumps(row), file=sys.stderr, flush=True)
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
