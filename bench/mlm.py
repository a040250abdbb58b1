"""A small BERT pretrained with masked LM on WikiText-2 (characters), against Hugging Face's
BertForMaskedLM trained on the very same batches and masks; then ELECTRA vs MLM at equal compute.

1. lmlab: ``pretrain("bert", objective="mlm")`` on the first ``--lines`` lines of WikiText-2 train.
2. Peer: ``transformers.BertForMaskedLM`` of the same shape, same optimizer, schedule, batches
   and 80/10/10 noise (its head adds a dense + LayerNorm transform, a few more parameters).
   Both: masked-token accuracy and loss on test windows (fixed noise), tokens/s.
3. ELECTRA (1-layer generator, shared embeddings) for as many steps as cost the same training
   FLOPs as the MLM run (6 · matmul parameters per token, generator + discriminator), then both
   encoders as frozen features for a linear probe (logistic regression on mean-pooled states)
   on 2000 SST-2 train sentences, accuracy on the 872 dev sentences.
Run: LMLAB_DATA=../shared/data python bench/mlm.py [--steps 300]; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmlab.data import data_root, from_texts  # noqa: E402
from lmlab.data.loaders import RandomWindows  # noqa: E402
from lmlab.data.shards import TokenShards  # noqa: E402
from lmlab.models.encoder import pool  # noqa: E402
from lmlab.tokenizers import WordLevelTokenizer  # noqa: E402
from lmlab.train import TrainConfig, lr_at, make_optimizer, pretrain  # noqa: E402
from lmlab.train.denoising import MaskedLM  # noqa: E402


def matmul_params(model) -> int:
    """Parameters in matrices a token multiplies through (blocks + output head), for FLOP counts."""
    blocks = sum(p.numel() for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2)
    return blocks + model.config.vocab_size * model.config.d_model


def masked_eval(model, objective: MaskedLM, batches: list[dict]) -> dict:
    model.eval()
    return objective.evaluate(model, batches)


def peer_mlm(vocab: int, args, source: RandomWindows, objective: MaskedLM, config: TrainConfig):
    """transformers' BertForMaskedLM trained on lmlab's batches and masks with the same optimizer."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(config.seed)
    hf = BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=args.d_model, num_hidden_layers=args.layers,
                                    num_attention_heads=4, intermediate_size=4 * args.d_model,
                                    max_position_embeddings=args.context, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0, pad_token_id=0))
    hf.train()
    optimizer = make_optimizer(hf, config, torch.device("cpu"))
    t0 = tokens = 0
    t0 = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, schedule=config.schedule, lr=config.lr, warmup=config.warmup,
                                decay_steps=config.steps)
        inputs, labels = objective.noise(source.batch(step)["input"], step)
        loss = hf(input_ids=inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), config.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int((labels != -100).sum())
    seconds = time.perf_counter() - t0
    hf.eval()

    def forward(ids, state=None):
        return hf(input_ids=ids).logits, None

    return forward, seconds, tokens, sum(p.numel() for p in hf.parameters())


def sst2(split: str, limit: int) -> tuple[list[str], np.ndarray]:
    lines = (data_root() / "sst2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:limit + 1]
    rows = [line.rsplit("\t", 1) for line in lines]
    return [r[0].strip() for r in rows], np.array([int(r[1]) for r in rows])


@torch.no_grad()
def features(model, tokenizer, texts: list[str], context: int) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(texts), 64):
        enc = tokenizer.batch_encode(texts[start:start + 64], max_length=context)
        ids, mask = torch.tensor(enc.ids), torch.tensor(enc.attention_mask)
        hidden, _ = model.hidden_states(ids, attention_mask=mask)
        out.append(pool(hidden, mask, "mean").numpy())
    return np.concatenate(out)


def probe(model, tokenizer, context: int) -> float:
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = sst2("train", 2000)
    dev_x, dev_y = sst2("dev", 872)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(features(model, tokenizer, train_x, context), train_y)
    return float(clf.score(features(model, tokenizer, dev_x, context), dev_y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lines", type=int, default=12000, help="WikiText-2 train lines to use")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = data_root() / "wikitext-2"
    train_lines = [line for line in (root / "train.txt").read_text(encoding="utf-8").splitlines()
                   if line.strip()][:args.lines]
    test_lines = [line for line in (root / "test.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    train_corpus, test_corpus = from_texts(train_lines, "wikitext-2:train"), from_texts(test_lines, "wikitext-2:test")
    tokenizer = WordLevelTokenizer("char", min_count=5).train(train_corpus)
    model_settings = dict(d_model=args.d_model, n_layers=args.layers, n_heads=4)
    config = dict(steps=args.steps, lr=1e-3, schedule="cosine", warmup=max(args.steps // 10, 1), device="cpu",
                  log_every=50)
    results: dict = {"data": f"WikiText-2 characters, first {args.lines} train lines; test split",
                     "steps": args.steps, "batch_size": args.batch_size, "context": args.context, **model_settings}
    with tempfile.TemporaryDirectory() as tmp:
        mlm = pretrain("bert", train_corpus, tokenizer, Path(tmp) / "mlm", model=model_settings, training=config,
                       batch_size=args.batch_size, context=args.context, objective="mlm")
        model = mlm.model
        objective = MaskedLM(tokenizer.vocab_size, model.vocab_size, special_ids=sorted(tokenizer.special_ids),
                             seed=1337)
        from lmlab.data.shards import write_shards

        test_tokens = write_shards(test_corpus, tokenizer, Path(tmp) / "test")
        test_windows = RandomWindows(test_tokens, args.batch_size, args.context, seed=7)
        batches = [test_windows.batch(i) for i in range(40)]
        ours = masked_eval(model, objective, batches)
        results["lmlab_mlm"] = {**ours, "train_seconds": mlm.train.seconds,
                                "masked_tokens_per_s": mlm.train.tokens / mlm.train.seconds,
                                "parameters": sum(p.numel() for p in model.parameters())}
        if not args.no_peer:
            train_tokens = TokenShards(Path(tmp) / "mlm" / "data" / "train")
            source = RandomWindows(train_tokens, args.batch_size, args.context, seed=1337)
            train_noise = MaskedLM(tokenizer.vocab_size, model.vocab_size, special_ids=sorted(tokenizer.special_ids),
                                   seed=1337)
            forward, seconds, tokens, params = peer_mlm(model.vocab_size, args, source, train_noise,
                                                        TrainConfig(**config))
            peer = objective.evaluate(forward, batches)
            results["hf_bert_mlm"] = {**peer, "train_seconds": seconds, "masked_tokens_per_s": tokens / seconds,
                                      "parameters": params}
            results["accuracy_ratio"] = ours["accuracy"] / peer["accuracy"]
            results["speed_ratio"] = results["lmlab_mlm"]["masked_tokens_per_s"] / (tokens / seconds)
        # ELECTRA at the MLM run's training FLOPs
        from lmlab.train.denoising import ElectraModel

        disc = matmul_params(model)
        gen = matmul_params(ElectraModel(model).generator)
        electra_steps = max(1, round(args.steps * disc / (disc + gen)))
        electra = pretrain("bert", train_corpus, tokenizer, Path(tmp) / "electra", model=model_settings,
                           training={**config, "steps": electra_steps, "warmup": max(electra_steps // 10, 1)},
                           batch_size=args.batch_size, context=args.context, objective="electra")
        results["electra"] = {"steps": electra_steps, "train_seconds": electra.train.seconds,
                              "flops_per_token_ratio_to_mlm": (disc + gen) / disc}
        results["sst2_probe_accuracy"] = {"mlm": probe(model, tokenizer, args.context),
                                          "electra": probe(electra.model, tokenizer, args.context)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
