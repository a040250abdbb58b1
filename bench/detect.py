"""Machine-text detection: AUROC of each detector against each generator, on matched human text.

Human text: WikiText-2 valid+test paragraphs whose first ``--words`` tokens hold no ``<unk>`` (the
shared copy is the ``<unk>`` version), cut to those tokens and detokenised (``@-@`` → ``-``, no
space before punctuation). Machine text, one document per human one, prompted with its first
``--prompt-words`` tokens and cut to the same length, sampled (temperature 1, top-p 0.95, seed per
document) through ``lmlab.generate.engine.Engine`` in one batch from:

* ``smollm2``: SmolLM2-135M-Instruct (plain continuation, no chat template), as many SmolLM2 tokens
  as the human document has;
* ``ngram``: lmlab's Kneser–Ney trigram over WikiText-2 train words (``<unk>`` banned), as many words.

Detectors (``lmlab.eval.detect``), all scored by SmolLM2-135M-Instruct: perplexity, burstiness, and —
with a reference model sharing SmolLM2's tokenizer, a Kneser–Ney trigram over SmolLM2 tokens of
WikiText-2 train — the likelihood ratio and Binoculars. The ROC curves go to ``--plot``.
The last line is one JSON object: ``auroc[generator][detector]``.
Run: LMLAB_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 python bench/detect.py [--docs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from lmlab.data import data_root  # noqa: E402
from lmlab.eval.detect import detection_auroc, detector_scores, score_documents  # noqa: E402
from lmlab.eval.roc import plot_roc  # noqa: E402
from lmlab.generate.engine import Engine  # noqa: E402
from lmlab.generate.loop import Request  # noqa: E402
from lmlab.generate.settings import DecodingSettings  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.ngram import NgramLM  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402


def detokenize(words: list[str]) -> str:
    """WikiText's tokenised words as ordinary text (the same rules for human and n-gram text)."""
    text = " ".join(words)
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = re.sub(r" ([,.;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[$]) ", r"\1", text)
    text = re.sub(r" (n't|'s|'re|'ve|'d|'ll|'m)\b", r"\1", text)
    out, opened = [], False
    for piece in text.split(' " '):  # pair straight quotes: " a " → "a"
        out.append(piece)
        out.append(' "' if not opened else '" ')
        opened = not opened
    return "".join(out[:-1]).strip()


def prompt_cut(words: list[str], at_least: int) -> int:
    """How many WikiText tokens to prompt with: ``at_least``, more while the cut would split an ``@-@`` join."""
    k = at_least
    while k < len(words) - 1 and (words[k - 1].startswith("@") or words[k].startswith("@")):
        k += 1
    return k


def paragraphs(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("=")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=150, help="human documents (and as many per generator)")
    ap.add_argument("--words", type=int, default=60, help="WikiText tokens per document")
    ap.add_argument("--prompt-words", type=int, default=8)
    ap.add_argument("--train-paragraphs", type=int, default=None, help="WikiText-2 train paragraphs for the n-grams")
    ap.add_argument("--plot", default="detect_roc.png")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0, timings = time.time(), {}
    wiki = data_root() / "wikitext-2"
    held = [p for split in ("valid", "test") for p in paragraphs(wiki / f"{split}.txt")
            if len(p) >= args.words and "<unk>" not in p[:args.words]][:args.docs]
    human = [detokenize(p[:args.words]) for p in held]
    train_words = paragraphs(wiki / "train.txt")[:args.train_paragraphs]
    train = [" ".join(p) for p in train_words]

    lm, tok = load_model("smollm2-135m-instruct")
    lm.eval()
    settings = DecodingSettings(temperature=1.0, top_p=0.95, banned_ids=(tok.eos_id,))  # lengths stay matched
    t = time.time()
    prompts = [tok.encode(" ".join(h.split()[:args.prompt_words]), add_special_tokens=False) for h in human]
    budget = [len(tok.encode(h, add_special_tokens=False)) - len(q) for h, q in zip(human, prompts, strict=True)]
    done = Engine(lm, tok, settings=settings, decode_layout=False).generate(
        [Request([tok.start_id, *q], max_new_tokens=n, seed=i) for i, (q, n) in enumerate(zip(prompts, budget,
                                                                                              strict=True))])
    smollm2 = [tok.decode(q + c.ids) for q, c in zip(prompts, done, strict=True)]
    timings["generate_smollm2_s"] = time.time() - t

    t = time.time()
    words = WordLevelTokenizer("word").train(train)
    ngram = NgramLM.fit_corpus(train, words, order=3, smoothing="mkn")
    ngram_settings = DecodingSettings(temperature=1.0, top_p=0.95, banned_ids=(words.unk_id, words.eos_id))
    cuts = [prompt_cut(p, args.prompt_words) for p in held]
    done = Engine(ngram, words, settings=ngram_settings).generate(
        [Request([words.bos_id, *words.encode(" ".join(p[:k]), add_special_tokens=False)],
                 max_new_tokens=args.words - k, seed=i) for i, (p, k) in enumerate(zip(held, cuts, strict=True))])
    ngram_docs = [detokenize(p[:k] + [words.id_to_token(i) for i in c.ids])
                  for p, k, c in zip(held, cuts, done, strict=True)]
    timings["train_generate_ngram_s"] = time.time() - t

    t = time.time()
    reference = NgramLM.fit_corpus([detokenize(p) for p in train_words], tok, order=3,
                                   smoothing="mkn")
    timings["reference_fit_s"] = time.time() - t

    t = time.time()
    scored = {name: score_documents(lm, tok, docs, reference=reference, reference_tokenizer=tok, min_tokens=8)
              for name, docs in (("human", human), ("smollm2", smollm2), ("ngram", ngram_docs))}
    timings["score_s"] = time.time() - t
    auroc, curves = {}, {}
    for gen in ("smollm2", "ngram"):
        docs, labels = scored["human"] + scored[gen], [0] * len(human) + [1] * len(scored[gen])
        auroc[gen] = {k: round(v["auroc"], 4) for k, v in detection_auroc(docs, labels).items()}
        curves.update({f"{gen}: {k}": v for k, v in detector_scores(docs, labels).items()})
    plot_roc(curves, args.plot, title="machine-text detection (scorer SmolLM2-135M-Instruct)")
    mean_tokens = {k: round(sum(d["tokens"] for d in v) / len(v), 1) for k, v in scored.items()}
    examples = {"human": human[0], "smollm2": smollm2[0], "ngram": ngram_docs[0]}
    print(json.dumps({"examples": examples}, ensure_ascii=False))
    print(json.dumps({"auroc": auroc, "documents_per_class": len(human), "mean_tokens": mean_tokens,
                      "plot": args.plot, "timings_s": {k: round(v, 1) for k, v in timings.items()},
                      "total_s": round(time.time() - t0, 1), "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
