"""Neural MT on Multi30k de→en trained to real BLEU on a CPU: the transformer encoder–decoder
(``bart`` preset) and the RNN encoder–decoders with Bahdanau / Luong attention and the copy
(pointer-generator) mechanism, all through ``lmlab.train.pretrain(objective="seq2seq")``.

1. lmlab's BPE (one de+en vocabulary) trained on the 29,000 training pairs;
2. the model trained for ``--steps`` steps (cosine schedule, label smoothing 0.1); every
   ``--eval-every`` steps the validation loss and the greedy BLEU of the first ``--monitor``
   validation sentences are logged (``metrics.jsonl``: ``eval_loss``, ``valid_bleu``);
3. the saved model directory loaded back and the 2016 test set translated greedily and with
   beam search (``--beam``, length-normalised scores);
4. BLEU with ``lmlab.eval.bleu`` (cased and lower-cased) and, as the peer in the same run,
   ``sacrebleu`` on the same outputs; the copy-the-source baseline beside it;
5. rare words: of the test references' words that also occur in the source sentence (names,
   numbers, words German and English share) and that are rare in the training targets, how many
   the translation contains — the words a copy mechanism should help with.

Run (one model per call; the last line is one JSON object):
  LMLAB_DATA=../shared/data nice -n 10 python bench/mt.py --model transformer --out runs/mt-transformer
  ... --model rnn-bahdanau | rnn-luong | rnn-copy   (see MODELS below for the settings)
  ``--from-run RUN`` evaluates a finished run instead; ``--multilingual`` trains de→en and en→de in
  one model (target-language tags ``<2en>``/``<2de>``) and scores both directions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.core.io import write_text  # noqa: E402
from lmlab.data.parallel import both_directions, language_tag, parallel_corpora  # noqa: E402
from lmlab.eval.bleu import corpus_bleu, tokenize_13a  # noqa: E402
from lmlab.generate.translate import translate  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tokenizers import load as load_tokenizer  # noqa: E402
from lmlab.tokenizers.trainers import train_tokenizer  # noqa: E402
from lmlab.train import TrainConfig, pretrain, read_run  # noqa: E402

#: family and model settings of each benchmarked model
MODELS = {
    # pre-LN (Xiong et al., 2020): with BART's post-LN blocks and 200 warmup steps the decoder still ignored
    # the source after 600 steps (the same caption for every sentence; validation BLEU 0.6 at step 300,
    # 3.4 at 600); pre-LN reached 5.5 at step 300 on the same batches
    "transformer": ("bart", dict(d_model=256, n_layers=3, n_heads=4, d_ff=1024, dropout=0.1, norm_position="pre")),
    "rnn-luong": ("rnn-seq2seq", dict(cell="gru", attention="general", input_feeding=False, d_embed=256,
                                      d_hidden=512, dropout=0.3)),
    "rnn-luong-copy": ("rnn-seq2seq", dict(cell="gru", attention="general", input_feeding=False, copy=True,
                                           d_embed=256, d_hidden=512, dropout=0.3)),
    "rnn-bahdanau": ("rnn-seq2seq", dict(cell="gru", attention="bahdanau", d_embed=256, d_hidden=512, dropout=0.3)),
}
#: (steps, peak learning rate) of each model unless --steps / --lr say otherwise
SCHEDULE = {"transformer": (1800, 7e-4), "rnn-luong": (2000, 1e-3), "rnn-luong-copy": (2000, 1e-3),
            "rnn-bahdanau": (1500, 1e-3)}


def bleu(hyps: list[str], refs: list[str]) -> dict:
    """lmlab's BLEU cased and lower-cased, with sacrebleu's on the same outputs."""
    out = {"cased": round(corpus_bleu(hyps, [refs]).score, 2),
           "lowercased": round(corpus_bleu(hyps, [refs], lowercase=True).score, 2)}
    try:
        import sacrebleu

        out["sacrebleu_cased"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
        out["sacrebleu_lowercased"] = round(sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score, 2)
    except ImportError:
        out["sacrebleu"] = "not installed: not measured"
    return out


def rare_copy_recall(sources: list[str], hyps: list[str], refs: list[str], train_targets: list[str],
                     max_counts: tuple[int, ...] = (1, 5, 20)) -> dict:
    """Recall of reference words that also stand in the source and occur at most ``max_count`` times in
    the training targets (13a tokens, cased), per ``max_count``: how often the translation carries such
    a word over."""
    counts = Counter(w for line in train_targets for w in tokenize_13a(line).split())
    out = {}
    for max_count in max_counts:
        wanted = found = 0
        for src, hyp, ref in zip(sources, hyps, refs, strict=True):
            src_words, hyp_words = set(tokenize_13a(src).split()), set(tokenize_13a(hyp).split())
            for w in set(tokenize_13a(ref).split()):
                if w in src_words and counts[w] <= max_count and any(c.isalnum() for c in w):
                    wanted += 1
                    found += w in hyp_words
        out[f"train_count_le_{max_count}"] = {"words": wanted, "carried_over": found,
                                              "recall": round(found / max(wanted, 1), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="transformer", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=None, help="default: SCHEDULE[model]")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None, help="default: SCHEDULE[model]")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--decay-steps", type=int, default=None,
                        help="the cosine schedule's length (default --steps); longer = stop early on the same "
                             "schedule as a longer run, for comparisons at equal steps")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--monitor", type=int, default=300, help="validation sentences for the BLEU logged in training")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length-penalty", type=float, default=1.0, help="beam: score / length^α")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="translate only the first N test sentences")
    parser.add_argument("--out", help="run directory (default: runs/mt-MODEL)")
    parser.add_argument("--from-run", help="skip training: evaluate this run directory")
    parser.add_argument("--multilingual", action="store_true", help="one model for de→en and en→de (tags)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.steps, args.lr = args.steps or SCHEDULE[args.model][0], args.lr or SCHEDULE[args.model][1]
    train_pair = parallel_corpora("multi30k:train", pair="de-en")
    valid_pair = parallel_corpora("multi30k:val", pair="de-en")
    test_de, test_en = (list(c) for c in parallel_corpora("multi30k:test", pair="de-en"))
    if args.limit:
        test_de, test_en = test_de[:args.limit], test_en[:args.limit]
    valid_de, valid_en = (list(c)[:args.monitor] for c in valid_pair)
    to_en = "en" if args.multilingual else None
    results: dict = {"data": "Multi30k task 1 de→en: 29,000 training pairs, test 2016", "model": args.model,
                     "threads": args.threads, "load_before": [round(x, 2) for x in os.getloadavg()]}
    run = Path(args.from_run or args.out or f"runs/mt-{args.model}{'-multilingual' if args.multilingual else ''}")
    if args.from_run:
        saved = read_run(run)
        results.update(family=saved["family"], settings=saved["model"], training=saved["training"])
        tokenizer = load_tokenizer(run)
    else:
        family, settings = MODELS[args.model]
        t0 = time.perf_counter()
        tags = {f"to_{lang}": language_tag(lang) for lang in ("en", "de")} if args.multilingual else {}
        tokenizer = train_tokenizer("bpe", [*train_pair[0], *train_pair[1]], args.vocab,
                                    special_tokens={"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>", **tags})
        results["tokenizer_seconds"] = round(time.perf_counter() - t0, 1)
        config = TrainConfig.from_dict(dict(steps=args.steps, lr=args.lr, schedule="cosine", warmup=args.warmup,
                                            decay_steps=args.decay_steps,
                                            min_lr=args.lr / 50, beta2=0.98, weight_decay=0.01, device="cpu",
                                            log_every=20, eval_every=args.eval_every, clip=1.0,
                                            checkpoint_every=args.eval_every))

        if args.multilingual:
            train_pair, valid_pair = both_directions(train_pair, "de-en"), both_directions(valid_pair, "de-en")

        def monitor(model) -> dict[str, float]:
            hyps = translate(model, tokenizer, valid_de, beam_size=1, target_language=to_en)
            model.train()
            return {"valid_bleu": corpus_bleu(hyps, [valid_en], lowercase=True).score}

        result = pretrain(family, train_pair, tokenizer, run, model=settings, training=config, valid=valid_pair,
                          batch_size=args.batch_size, context=args.context, objective="seq2seq",
                          label_smoothing=0.1, eval_batches=8, monitor=monitor,
                          resume=(run / "checkpoints").exists())
        results.update(family=family, settings=settings, train_seconds=round(result.train.seconds, 1),
                       steps=result.train.steps)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results["curve"] = [{k: round(r[k], 3) for k in ("step", "eval_loss", "valid_bleu") if k in r}
                        for r in logged if "eval_loss" in r]
    results["final_train_loss"] = round([r["loss"] for r in logged if "loss" in r][-1], 4)
    model, tok = load_model(run / "model")
    model.eval()
    results["parameters"] = sum(p.numel() for p in model.parameters())
    results["test_sentences"] = len(test_de)
    t0 = time.perf_counter()
    greedy = translate(model, tok, test_de, beam_size=1, target_language=to_en)
    results["greedy_seconds"] = round(time.perf_counter() - t0, 1)
    results["greedy_bleu"] = bleu(greedy, test_en)
    write_text(run / "test_greedy.txt", "".join(h + "\n" for h in greedy))
    beam = greedy
    if args.beam > 1:
        t0 = time.perf_counter()
        beam = translate(model, tok, test_de, beam_size=args.beam, length_penalty=args.length_penalty,
                         target_language=to_en)
        results["beam_seconds"] = round(time.perf_counter() - t0, 1)
        results[f"beam{args.beam}_bleu"] = bleu(beam, test_en)
        write_text(run / f"test_beam{args.beam}.txt", "".join(h + "\n" for h in beam))
    results["copy_source_bleu"] = bleu(test_de, test_en)
    if args.multilingual:  # the other direction, from the same model
        results["en_de_greedy_bleu"] = bleu(translate(model, tok, test_en, target_language="de"), test_de)
    results["rare_source_words_in_output"] = rare_copy_recall(test_de, beam, test_en, list(train_pair[1]))
    results["rare_words_from"] = f"beam {args.beam}" if args.beam > 1 else "greedy"
    results["examples"] = [{"de": test_de[i], "ours": beam[i], "en": test_en[i]} for i in (0, 1, 2)]
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
