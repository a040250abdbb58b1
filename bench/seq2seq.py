"""A small encoder–decoder trained on Multi30k de→en with ``pretrain(objective="seq2seq")``, then
BLEU on the 2016 test set with lmlab's BLEU, next to the copy-the-source baseline.

1. lmlab's BPE (shared de+en vocabulary) trained on the training pairs;
2. ``pretrain(PRESET, (train.de, train.en), objective="seq2seq")`` for ``--steps`` steps;
3. the saved model directory loaded back (``load_model``) and the test set translated greedily
   (batched, both caches) and, on the first ``--beam-sentences``, with beam search;
4. BLEU with ``lmlab.eval.bleu`` and, as the peer in the same run, ``sacrebleu`` on the same outputs;
5. peer model (``--peer``): ``transformers``' ``BartForConditionalGeneration`` of the same shape
   trained on the very same batches with the same optimizer and schedule (median target tokens/s
   per step, as ours from metrics.jsonl) and, when it runs every step, greedy-decoded and scored.
Run: LMLAB_DATA=../shared/data python bench/seq2seq.py [--steps 600]; the last line is one JSON object
(``--from-run RUN`` evaluates a finished run instead of training one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.data.parallel import PairBatches, parallel_corpora  # noqa: E402
from lmlab.eval.bleu import corpus_bleu  # noqa: E402
from lmlab.generate.translate import translate  # noqa: E402
from lmlab.models import load_model  # noqa: E402
from lmlab.tokenizers import load as load_tokenizer  # noqa: E402
from lmlab.tokenizers.trainers import train_tokenizer  # noqa: E402
from lmlab.train import TrainConfig, lr_at, make_optimizer, pretrain, read_run  # noqa: E402


def bleu(hyps: list[str], refs: list[str]) -> dict:
    ours = corpus_bleu(hyps, [refs]).score
    out = {"lmlab": round(ours, 2)}
    try:
        import sacrebleu

        out["sacrebleu"] = round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    except ImportError:
        out["sacrebleu"] = "not installed: not measured"
    return out


def peer_bart(model, tokenizer, source: PairBatches, config: TrainConfig, label_smoothing: float, test: list[str],
              steps: int):
    """transformers' BART of the same shape, trained ``steps`` steps on the same batches (the same
    schedule as ours); (greedy hypotheses when it ran every step, else None, seconds, median tokens/s)."""
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = model.config
    torch.manual_seed(config.seed)
    hf = BartForConditionalGeneration(BartConfig(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, encoder_layers=cfg.n_layers, decoder_layers=cfg.n_layers,
        encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads, encoder_ffn_dim=cfg.d_ff,
        decoder_ffn_dim=cfg.d_ff, max_position_embeddings=cfg.context_length, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="gelu", scale_embedding=False, pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, decoder_start_token_id=tokenizer.bos_id,
        forced_eos_token_id=None, tie_word_embeddings=True))
    hf.train()
    optimizer = make_optimizer(hf, config, torch.device("cpu"))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=label_smoothing)
    tokens, t0, rates = 0, time.perf_counter(), []
    for step in range(steps):
        t_step = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, schedule=config.schedule, lr=config.lr, warmup=config.warmup,
                                decay_steps=config.steps)
        b = source.batch(step)
        start = torch.full_like(b["target"][:, :1], tokenizer.bos_id)
        decoder_in = torch.cat([start, b["target"][:, :-1]], 1)
        logits = hf(input_ids=b["source"], attention_mask=b["source_mask"], decoder_input_ids=decoder_in,
                    decoder_attention_mask=torch.cat([torch.ones_like(start), b["target_mask"][:, :-1]], 1)).logits
        labels = b["target"].masked_fill(b["target_mask"] == 0, -100)
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), config.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(b["target_mask"].sum())
        rates.append(int(b["target_mask"].sum()) / (time.perf_counter() - t_step))
    seconds = time.perf_counter() - t0
    if steps < config.steps:
        return None, seconds, statistics.median(rates)
    hf.eval()
    eos = [tokenizer.eos_id]
    hyps = []
    with torch.no_grad():
        for i in range(0, len(test), 64):
            rows = [tokenizer.encode(t)[:cfg.context_length - 1] + eos for t in test[i:i + 64]]
            width = max(map(len, rows))
            ids = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
            out = hf.generate(input_ids=ids, attention_mask=(ids != tokenizer.pad_id).long(), num_beams=1,
                              do_sample=False, max_new_tokens=cfg.context_length, decoder_start_token_id=tokenizer.bos_id)
            hyps += tokenizer.decode_batch(out.tolist(), skip_special_tokens=True)
    return hyps, seconds, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bart", choices=("bart", "t5"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--beam-sentences", type=int, default=200)
    parser.add_argument("--peer", action="store_true", help="also train transformers' BART on the same batches")
    parser.add_argument("--peer-steps", type=int, default=None,
                        help="peer steps (default all: then it is decoded and scored too; fewer = speed only)")
    parser.add_argument("--out", help="keep the run directory here (default: a temporary one)")
    parser.add_argument("--from-run", help="skip training: evaluate this finished run directory (its RUN/model)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    train_pair = parallel_corpora("multi30k:train", pair="de-en")
    valid_pair = parallel_corpora("multi30k:val", pair="de-en")
    test_de, test_en = (list(c) for c in parallel_corpora("multi30k:test", pair="de-en"))
    results: dict = {"data": "Multi30k task 1 de→en: 29,000 training pairs, test 2016 (1,000)"}
    results["copy_source_bleu"] = bleu(test_de, test_en)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.from_run or args.out or tmp)
        if args.from_run:
            saved = read_run(run)
            args.steps, args.batch_size = saved["training"]["steps"], saved["batch_size"]
            config = TrainConfig.from_dict(saved["training"])
            tokenizer = load_tokenizer(run)
            results.update(preset=saved["family"], **saved["model"])
        else:
            t0 = time.perf_counter()
            tokenizer = train_tokenizer("bpe", [*train_pair[0], *train_pair[1]], args.vocab)
            results["tokenizer_seconds"] = round(time.perf_counter() - t0, 1)
            settings = dict(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
            results.update(preset=args.preset, **settings)
            config = TrainConfig.from_dict(dict(steps=args.steps, lr=args.lr, schedule="cosine",
                                                warmup=max(args.steps // 20, 1), device="cpu", log_every=20,
                                                eval_every=max(args.steps // 4, 1), clip=1.0))
            result = pretrain(args.preset, train_pair, tokenizer, run, model=settings, training=config,
                              valid=valid_pair, batch_size=args.batch_size, context=args.context,
                              objective="seq2seq", label_smoothing=0.1, eval_batches=16)
            results["train_seconds"] = round(result.train.seconds, 1)
        results.update(steps=args.steps, batch_size=args.batch_size,
                       tokenizer=f"lmlab BPE {tokenizer.vocab_size} (shared de+en)")
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        results["target_tokens_per_s"] = round(statistics.median(r["tokens_per_s"] for r in logged
                                                                 if "tokens_per_s" in r), 1)  # median logged step
        results["final_train_loss"] = round([r["loss"] for r in logged if "loss" in r][-1], 4)
        evals = [r["eval_loss"] for r in logged if "eval_loss" in r]
        results["valid_loss"] = round(evals[-1], 4) if evals else None
        model, tok = load_model(run / "model")  # the saved directory, loaded back
        results["parameters"] = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        greedy = translate(model, tok, test_de, beam_size=1)
        results["greedy_seconds"] = round(time.perf_counter() - t0, 1)
        results["greedy_bleu"] = bleu(greedy, test_en)
        n = args.beam_sentences
        if n and args.beam > 1:
            beam = translate(model, tok, test_de[:n], beam_size=args.beam)
            results[f"beam{args.beam}_first{n}_bleu"] = bleu(beam, test_en[:n])
            results[f"greedy_first{n}_bleu"] = bleu(greedy[:n], test_en[:n])
        results["examples"] = [{"de": test_de[i], "ours": greedy[i], "en": test_en[i]} for i in (0, 1, 2)]
        if args.peer:
            source = PairBatches(_pairs_of(run), args.batch_size, tokenizer.pad_id, seed=config.seed)
            steps = min(args.peer_steps or args.steps, args.steps)
            hyps, seconds, rate = peer_bart(model, tokenizer, source, config, 0.1, test_de, steps)
            results["peer"] = {"model": "transformers BartForConditionalGeneration (same shape, batches, optimizer)",
                               "steps": steps, "train_seconds": round(seconds, 1), "target_tokens_per_s": round(rate, 1)}
            if hyps is not None:
                results["peer"].update(greedy_bleu=bleu(hyps, test_en), example=hyps[0])
            results["ratio_tokens_per_s_lmlab_over_peer"] = round(
                results["target_tokens_per_s"] / results["peer"]["target_tokens_per_s"], 2)
    print(json.dumps(results, ensure_ascii=False))


def _pairs_of(run: Path) -> list:
    from safetensors.torch import load_file

    from lmlab.data.parallel import from_tensors

    return from_tensors(load_file(str(run / "data" / "train_pairs.safetensors")))


if __name__ == "__main__":
    main()
