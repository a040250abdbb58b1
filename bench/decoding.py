"""Advanced decoding on SmolLM2-135M-Instruct: speculative decoding against ``transformers``, exactness on
20 prompts, MBR on Multi30k, FUDGE on SST-2, contrastive decoding and search on WikiText-2, self-consistency
on GSM8K.

Sections (``--only`` picks some; each is bounded by its flags):

* ``lookup`` — input-grounded tasks on SciFact abstracts (``summarize`` one; ``edit``: correct it and
  write it out again): plain greedy decoding vs prompt lookup speculation (``--lookup-tokens``
  drafted, n-grams up to ``--lookup-ngram``: ``transformers``' defaults), lmlab and ``transformers``
  (``prompt_lookup_num_tokens``, ``max_matching_ngram_size``) interleaved per prompt, batch 1, plus
  lmlab with adaptive draft length and n-grams of 3 down to 2. Tokens/s are end to end (prompt
  included); lmlab's decode-only figure is given too.
* ``draft`` — chat prompts (Self-Instruct seed tasks), plain vs speculative with a draft model
  (``--draft``, made by ``bench/draft_model.py``): lmlab vs ``transformers`` assisted generation with the
  same draft (exported to a Hugging Face directory), ``--draft-tokens`` a step (constant schedule, no
  confidence threshold: the same rule on both sides), batch 1; and lmlab with a trigram model of the draft's
  training answers (``answers.jsonl`` beside ``--draft``) as the draft.
* ``server`` — the same chat prompts from ``--clients`` concurrent clients through ``Scheduler`` (the
  continuous-batching loop ``lmlab serve`` runs): aggregate tokens/s plain vs speculative.
* ``exactness`` — ``--exact-prompts`` chat prompts: speculative greedy (draft model, n-gram on the
  prompt, prompt lookup) equals plain greedy token for token.
* ``mbr`` — Multi30k de→en test sentences with an lmlab translation model (``--mt-model``: a model
  directory or an ``lmlab pretrain --objective seq2seq`` run directory, its newest checkpoint): corpus BLEU
  (and chrF) of greedy, beam search and MBR with chrF as utility over ``--mbr-samples`` ε-sampled hypotheses
  (ε = 0.02, Freitag et al., 2023) and over a beam's n-best.
* ``fudge`` — SST-2: a prefix classifier (logistic regression on TF-IDF of SST-2 training sentences and
  their prefixes) steers SmolLM2's continuations of neutral openings toward "positive" with strength
  λ ∈ ``--strengths``; reported: the share judged positive by an independent judge (naive Bayes on
  full sentences) and SmolLM2's mean log-probability of the text (fluency).
* ``contrastive`` — ``--open-prompts`` WikiText-2 test openings (``--open-words`` words) continued for
  ``--open-new-tokens`` tokens: greedy, contrastive search (α = 0.6, k = 4) and contrastive decoding (α = 0.1)
  with a bigram amateur (WikiText-2 training text on SmolLM2's ids) and, with ``--draft``, the draft model as
  amateur; reported: seq-rep-2/3/4, diversity, coherence (MiniLM cosine of opening and continuation) and
  SmolLM2's mean log-probability of the continuation.
* ``selfconsistency`` — ``--sc-items`` GSM8K test problems (zero-shot chat prompts): accuracy of greedy vs
  a majority vote over ``--sc-samples`` samples (the GSM8K task's answer extraction), and how often any
  sample was right.

Timing figures are noisy on a shared machine: every variant is measured in the same run, interleaved,
with the load average and the CPU reported. The last line is one JSON object.
Run: python bench/decoding.py --draft runs/draft/model [--mt-model DIR] [--threads 2] [--only lookup,draft]
(docs/decoding.md's MBR figures: ``--mt-model runs/mt-rnn-luong-300/model``, the model directory of
``bench/mt.py --model rnn-luong --steps 300 --out runs/mt-rnn-luong-300``)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # a bench script must never shadow a package
sys.path.insert(0, str(HERE.parent))  # this checkout's lmlab, not an installed one

import torch  # noqa: E402

from lmlab.generate.chat_template import chat_prompt  # noqa: E402
from lmlab.generate.engine import Engine, Request  # noqa: E402
from lmlab.generate.settings import DecodingSettings  # noqa: E402
from lmlab.generate.speculative import ModelDraft, PromptLookup, PromptNgram, Speculative  # noqa: E402
from lmlab.models import load_model  # noqa: E402

DATA = Path(os.environ.get("LMLAB_DATA", HERE.parent.parent / "shared" / "data"))
SECTIONS = ("lookup", "draft", "server", "exactness", "mbr", "fudge", "contrastive", "selfconsistency")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict:
    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {"cpu": platform.processor() or platform.machine(), "avx512": "avx512f" in flags,
            "threads": torch.get_num_threads()}


def read_jsonl(path: Path, limit: int) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == limit:
                break
    return out


GROUNDED = {"summarize": "Summarize the following passage.\n\n{passage}",
            "edit": "Correct any errors in the following passage and write it out again.\n\n{passage}"}


def grounded_prompts(tok, task: str, n: int, words: int = 150) -> list[list[int]]:
    """Chat prompts asking SmolLM2 to summarise or to correct a SciFact abstract (its first ``words`` words)."""
    docs = read_jsonl(DATA / "scifact" / "corpus.jsonl", 4 * n)
    docs = [d for d in docs if len(d["text"].split()) >= words][:n]
    return [chat_prompt(tok, [{"role": "user", "content": GROUNDED[task].format(
        passage=" ".join(d["text"].split()[:words]))}]) for d in docs]


def chat_prompts(tok, n: int, skip: int = 0) -> list[list[int]]:
    rows = read_jsonl(DATA / "instructions" / "self_instruct_seed_tasks.jsonl", skip + n)[skip:]
    out = []
    for row in rows:
        task = row["instruction"]
        first = (row.get("instances") or [{}])[0].get("input", "")
        out.append(chat_prompt(tok, [{"role": "user", "content": task + (f"\n\n{first}" if first else "")}]))
    return out


def lmlab_run(engine: Engine, prompt: list[int], settings: DecodingSettings) -> dict:
    start = time.perf_counter()
    out = engine.generate([Request(prompt, settings=settings)])[0]
    wall = time.perf_counter() - start
    return {"ids": out.ids, "seconds": wall, "tokens": len(out.ids), "decode_s": out.stats.decode_s,
            "decode_tokens": out.stats.decode_tokens, "info": out.info}


def hf_run(model, prompt: list[int], new: int, eos: int, **kwargs) -> dict:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                             eos_token_id=eos, pad_token_id=eos, **kwargs)
    wall = time.perf_counter() - start
    gen = out[0, len(prompt):].tolist()
    if eos in gen:
        gen = gen[:gen.index(eos)]
    return {"ids": gen, "seconds": wall, "tokens": len(gen)}


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rows in runs.items():
        tokens, seconds = sum(r["tokens"] for r in rows), sum(r["seconds"] for r in rows)
        entry = {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds if seconds else 0.0}
        if rows and "decode_s" in rows[0]:
            decode_s = sum(r["decode_s"] for r in rows)
            entry["decode_tokens_per_s"] = sum(r["decode_tokens"] for r in rows) / decode_s if decode_s else 0.0
        if rows and rows[0].get("info"):
            drafted = sum(r["info"]["draft_tokens"] for r in rows)
            accepted = sum(r["info"]["accepted_tokens"] for r in rows)
            steps = sum(r["info"]["verify_steps"] for r in rows)
            entry.update(acceptance_rate=accepted / drafted if drafted else 0.0, drafted=drafted,
                         tokens_per_verify_step=(tokens - len(rows)) / steps if steps else 0.0)
        out[name] = entry
    return out


def interleaved(prompts: list[list[int]], variants: dict, loads: list[float]) -> dict[str, list[dict]]:
    """Each prompt through every variant, the order rotating from prompt to prompt."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for i, prompt in enumerate(prompts):
        for name in names[i % len(names):] + names[:i % len(names)]:
            runs[name].append(variants[name](prompt))
        loads.append(os.getloadavg()[0])
        say(f"  prompt {i + 1}/{len(prompts)} done (load {loads[-1]:.1f})")
    return runs


def agreement(a: list[dict], b: list[dict]) -> int:
    return sum(x["ids"] == y["ids"] for x, y in zip(a, b, strict=True))


def hf_smollm2():
    import transformers

    from lmlab.tokenizers import smollm2_gguf

    path = smollm2_gguf()
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()


# --- sections -------------------------------------------------------------------------------------
def section_lookup(args, lm, tok, hf) -> dict:
    return {task: lookup_task(args, lm, tok, hf, task) for task in args.lookup_tasks}


def lookup_task(args, lm, tok, hf, task: str) -> dict:
    prompts = grounded_prompts(tok, task, args.lookup_prompts)
    engine = Engine(lm, tok)
    plain = DecodingSettings(greedy=True, max_new_tokens=args.max_new_tokens)
    spec = plain.with_(method=Speculative(PromptLookup(max_ngram=args.lookup_ngram), draft_tokens=args.lookup_tokens))
    tuned = plain.with_(method=Speculative(PromptLookup(max_ngram=3, min_ngram=2), draft_tokens=args.lookup_tokens,
                                           adaptive=True))
    variants = {"lmlab_plain": lambda p: lmlab_run(engine, p, plain),
                "lmlab_prompt_lookup": lambda p: lmlab_run(engine, p, spec),
                "lmlab_prompt_lookup_adaptive": lambda p: lmlab_run(engine, p, tuned)}
    if hf is not None:
        variants["hf_plain"] = lambda p: hf_run(hf, p, args.max_new_tokens, tok.eos_id)
        variants["hf_prompt_lookup"] = lambda p: hf_run(hf, p, args.max_new_tokens, tok.eos_id,
                                                        prompt_lookup_num_tokens=args.lookup_tokens,
                                                        max_matching_ngram_size=args.lookup_ngram)
    for run in variants.values():  # warm-up
        run(prompts[0][:40])
    loads: list[float] = []
    runs = interleaved(prompts, variants, loads)
    out = {"prompts": len(prompts), "variants": summarise(runs), "load": loads,
           "lmlab_identical_to_plain": agreement(runs["lmlab_plain"], runs["lmlab_prompt_lookup"])}
    v = out["variants"]
    out["lmlab_speedup"] = v["lmlab_prompt_lookup"]["tokens_per_s"] / v["lmlab_plain"]["tokens_per_s"]
    out["lmlab_decode_speedup"] = (v["lmlab_prompt_lookup"]["decode_tokens_per_s"]
                                   / v["lmlab_plain"]["decode_tokens_per_s"])
    out["lmlab_adaptive_speedup"] = v["lmlab_prompt_lookup_adaptive"]["tokens_per_s"] / v["lmlab_plain"]["tokens_per_s"]
    out["lmlab_adaptive_identical_to_plain"] = agreement(runs["lmlab_plain"], runs["lmlab_prompt_lookup_adaptive"])
    if hf is not None:
        out["hf_speedup"] = v["hf_prompt_lookup"]["tokens_per_s"] / v["hf_plain"]["tokens_per_s"]
        out["hf_identical_to_plain"] = agreement(runs["hf_plain"], runs["hf_prompt_lookup"])
        out["lmlab_identical_to_hf"] = agreement(runs["lmlab_plain"], runs["hf_plain"])
        out["lmlab_lookup_vs_hf_lookup_tokens_per_s"] = (v["lmlab_prompt_lookup"]["tokens_per_s"]
                                                         / v["hf_prompt_lookup"]["tokens_per_s"])
    return out


def hf_draft(draft, tok, where: Path):
    import transformers

    from lmlab.models.hf_import import export_hf_dir

    export_hf_dir(draft, where, tok)
    return transformers.AutoModelForCausalLM.from_pretrained(str(where), dtype=torch.float32).eval()


def section_draft(args, lm, tok, hf, draft) -> dict:
    prompts = chat_prompts(tok, args.chat_prompts)
    engine = Engine(lm, tok)
    plain = DecodingSettings(greedy=True, max_new_tokens=args.max_new_tokens)
    fixed = plain.with_(method=Speculative(ModelDraft(draft), draft_tokens=args.draft_tokens))
    adaptive = plain.with_(method=Speculative(ModelDraft(draft), draft_tokens=args.draft_tokens, adaptive=True))
    variants = {"lmlab_plain": lambda p: lmlab_run(engine, p, plain),
                "lmlab_draft": lambda p: lmlab_run(engine, p, fixed),
                "lmlab_draft_adaptive": lambda p: lmlab_run(engine, p, adaptive)}
    answers = Path(args.draft).parent / "answers.jsonl"
    if answers.exists():  # a trigram model of the same distilled answers drafts too (no peer has one)
        from lmlab.ngram.model import NgramLM

        texts = [json.loads(line)["messages"][-1]["content"] for line in open(answers, encoding="utf-8")]
        ngram = NgramLM.fit_corpus(texts, tok, order=3, smoothing="wb")
        by_ngram = plain.with_(method=Speculative(ModelDraft(ngram), draft_tokens=args.draft_tokens))
        variants["lmlab_ngram_draft"] = lambda p: lmlab_run(engine, p, by_ngram)
    if hf is not None:
        assistant = hf_draft(draft, tok, Path(args.work) / "draft-hf")
        variants["hf_plain"] = lambda p: hf_run(hf, p, args.max_new_tokens, tok.eos_id)
        variants["hf_assisted"] = lambda p: hf_run(hf, p, args.max_new_tokens, tok.eos_id, assistant_model=assistant,
                                                   num_assistant_tokens=args.draft_tokens,
                                                   num_assistant_tokens_schedule="constant",
                                                   assistant_confidence_threshold=0.0)
    for run in variants.values():
        run(prompts[0])
    loads: list[float] = []
    runs = interleaved(prompts, variants, loads)
    v = summarise(runs)
    out = {"prompts": len(prompts), "variants": v, "load": loads,
           "lmlab_speedup": v["lmlab_draft"]["tokens_per_s"] / v["lmlab_plain"]["tokens_per_s"],
           "lmlab_adaptive_speedup": v["lmlab_draft_adaptive"]["tokens_per_s"] / v["lmlab_plain"]["tokens_per_s"],
           "lmlab_identical_to_plain": agreement(runs["lmlab_plain"], runs["lmlab_draft"]),
           "draft_cost": draft_cost(lm, draft, prompts[0])}
    if "lmlab_ngram_draft" in v:
        out["lmlab_ngram_speedup"] = v["lmlab_ngram_draft"]["tokens_per_s"] / v["lmlab_plain"]["tokens_per_s"]
        out["lmlab_ngram_identical_to_plain"] = agreement(runs["lmlab_plain"], runs["lmlab_ngram_draft"])
    if hf is not None:
        out["hf_speedup"] = v["hf_assisted"]["tokens_per_s"] / v["hf_plain"]["tokens_per_s"]
        out["hf_identical_to_plain"] = agreement(runs["hf_plain"], runs["hf_assisted"])
        out["lmlab_identical_to_hf_assisted"] = agreement(runs["lmlab_draft"], runs["hf_assisted"])
    return out


def draft_cost(lm, draft, prompt: list[int], steps: int = 16) -> dict:
    """Milliseconds of one target step (1 token and K+1 tokens) and one draft step, batch 1."""

    def timed(model, width: int) -> float:
        _, state = model.prefill([prompt], reserve=steps * width + 8)
        fed = torch.tensor([prompt[-width:]])
        start = time.perf_counter()
        for _ in range(steps):
            _, state = model.next_scores_all(fed, state) if width > 1 else model.next_scores(fed, state)
        return 1000 * (time.perf_counter() - start) / steps

    with torch.inference_mode():
        return {"target_1_token_ms": timed(lm, 1), "target_5_tokens_ms": timed(lm, 5), "draft_1_token_ms": timed(draft, 1)}


def section_server(args, lm, tok, draft) -> dict:
    from lmlab.generate.scheduler import Scheduler

    prompts = chat_prompts(tok, args.clients, skip=args.chat_prompts)
    plain = DecodingSettings(greedy=True, max_new_tokens=args.max_new_tokens)
    spec = plain.with_(method=Speculative(ModelDraft(draft), draft_tokens=args.draft_tokens))
    out: dict = {"clients": args.clients, "load": []}
    ids = {}
    for name, settings in (("plain", plain), ("speculative", spec), ("plain_again", plain)):
        with Scheduler(lm, tok, max_batch=args.clients, max_queue=args.clients) as scheduler:
            results: list = [None] * len(prompts)

            def client(i: int, scheduler=scheduler, settings=settings, results=results) -> None:
                results[i] = scheduler.generate(Request(prompts[i], settings=settings))

            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        tokens = sum(len(r.ids) for r in results)
        ids[name] = [r.ids for r in results]
        out[name] = {"tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall}
        if name == "speculative":
            drafted = sum(r.info["draft_tokens"] for r in results)
            out[name]["acceptance_rate"] = sum(r.info["accepted_tokens"] for r in results) / max(drafted, 1)
        out["load"].append(os.getloadavg()[0])
        say(f"  server {name}: {out[name]['tokens_per_s']:.1f} tokens/s")
    plain_rate = (out["plain"]["tokens_per_s"] + out["plain_again"]["tokens_per_s"]) / 2
    out["speedup"] = out["speculative"]["tokens_per_s"] / plain_rate
    out["identical_to_plain"] = sum(a == b for a, b in zip(ids["plain"], ids["speculative"], strict=True))
    return out


def section_exactness(args, lm, tok, draft) -> dict:
    prompts = chat_prompts(tok, args.exact_prompts, skip=40)
    engine = Engine(lm, tok)
    plain = DecodingSettings(greedy=True, max_new_tokens=args.exact_tokens)
    drafters = {"prompt_lookup": PromptLookup(max_ngram=args.lookup_ngram), "ngram_on_prompt": PromptNgram()}
    if draft is not None:
        drafters["draft_model"] = ModelDraft(draft)
    drafters = {name: d for name, d in drafters.items() if name in args.exact_drafters}
    want = [engine.generate([Request(p, settings=plain)])[0].ids for p in prompts]
    out = {"prompts": len(prompts), "max_new_tokens": args.exact_tokens}
    for name, drafter in drafters.items():
        settings = plain.with_(method=Speculative(drafter, draft_tokens=4))
        got = [engine.generate([Request(p, settings=settings)])[0].ids for p in prompts]
        same = sum(g == w for g, w in zip(got, want, strict=True))
        first_diff = [next((i for i, (a, b) in enumerate(zip(g, w, strict=False)) if a != b), min(len(g), len(w)))
                      for g, w in zip(got, want, strict=True) if g != w]
        out[name] = {"identical": same, "first_difference_at": first_diff}
        say(f"  exactness {name}: {same}/{len(prompts)} identical")
    return out


def translation_model(path: Path):
    """A translation model directory, or the newest checkpoint of an ``lmlab pretrain --objective seq2seq`` run."""
    from lmlab.models.directory import model_class
    from lmlab.tokenizers import load
    from lmlab.train.checkpoint import latest_checkpoint

    if (path / "config.json").exists():
        model, tok = load_model(path)
        return model.eval(), tok
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise SystemExit(f"{path} is neither a model directory nor a run directory with a checkpoint")
    from safetensors.torch import load_file

    config = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["model_config"]
    model = model_class(config["model_type"]).from_state(config, load_file(str(checkpoint / "model.safetensors")))
    say(f"  translation model: {checkpoint}")
    return model.eval(), load(path)


def section_mbr(args) -> dict:
    from lmlab.eval.bleu import corpus_bleu
    from lmlab.eval.chrf import corpus_chrf
    from lmlab.eval.utility import utility
    from lmlab.generate.sampling import run_one
    from lmlab.generate.select import MBR
    from lmlab.generate.translate import decoder_start, encode_sources, translate

    model, tok = translation_model(Path(args.mt_model))
    src = [line.strip() for line in open(DATA / "multi30k" / "test_2016_flickr.de", encoding="utf-8")][:args.mt_items]
    ref = [line.strip() for line in open(DATA / "multi30k" / "test_2016_flickr.en", encoding="utf-8")][:args.mt_items]
    out: dict = {"model": str(args.mt_model), "items": len(src), "samples": args.mbr_samples}
    start = time.perf_counter()
    greedy = translate(model, tok, src)
    out["greedy_bleu"] = corpus_bleu(greedy, [ref]).score
    out["greedy_chrf"] = corpus_chrf(greedy, [ref]).score
    beam = translate(model, tok, src, beam_size=5)
    out["beam5_bleu"] = corpus_bleu(beam, [ref]).score
    out["beam5_chrf"] = corpus_chrf(beam, [ref]).score
    chrf = MBR(utility("chrf"), "chrf")
    limit = min(model.context_length, 64) - 1
    sampled = DecodingSettings(best_of=args.mbr_samples, epsilon=0.02, select=chrf, max_new_tokens=limit, seed=0)
    beamed = DecodingSettings(beam_size=args.mbr_samples, n=args.mbr_samples, select=chrf, max_new_tokens=limit)
    mbr_sample, mbr_beam = [], []
    for i, ids in enumerate(encode_sources(model, tok, src)):
        model.bind(torch.tensor(ids))
        mbr_sample.append(run_one(model, [decoder_start(model)], sampled.with_(seed=i), tok)[0].text)
        mbr_beam.append(run_one(model, [decoder_start(model)], beamed, tok)[0].text)
    model.source = None
    out["mbr_chrf_sampled_bleu"] = corpus_bleu(mbr_sample, [ref]).score
    out["mbr_chrf_beam_bleu"] = corpus_bleu(mbr_beam, [ref]).score
    out["mbr_chrf_sampled_chrf"] = corpus_chrf(mbr_sample, [ref]).score
    out["mbr_chrf_beam_chrf"] = corpus_chrf(mbr_beam, [ref]).score
    out["seconds"] = time.perf_counter() - start
    return out


def section_fudge(args, lm, tok) -> dict:
    from lmlab.classify import LogisticRegression, NaiveBayes
    from lmlab.classify.guidance import label_probabilities, prefix_scorer
    from lmlab.generate.guided import Fudge

    rows = [line.rstrip("\n").split("\t") for line in open(DATA / "sst2" / "train.tsv", encoding="utf-8")][1:]
    rows = rows[:args.fudge_train]
    texts, labels = [r[0] for r in rows], [r[1] for r in rows]
    prefixes, prefix_labels = [], []
    for text, label in zip(texts, labels, strict=True):  # a future discriminator learns from prefixes
        words = text.split()
        for cut in range(2, len(words), 3):
            prefixes.append(" ".join(words[:cut]))
            prefix_labels.append(label)
    guide = LogisticRegression(max_iter=200).fit(texts + prefixes, labels + prefix_labels)
    judge = NaiveBayes().fit(texts, labels)
    openings = ["The movie", "This film is", "I watched the show and", "The acting was", "Overall, the story",
                "The director", "Watching it, I felt", "The ending"][:args.fudge_prompts]
    engine = Engine(lm, tok, decode_layout=False)
    out: dict = {"train_sentences": len(texts), "openings": openings, "samples_per_opening": args.fudge_samples}
    for strength in args.strengths:
        base = DecodingSettings(max_new_tokens=args.fudge_tokens, n=args.fudge_samples, seed=0, top_k=50)
        settings = base if strength == 0 else base.with_(method=Fudge(
            prefix_scorer(guide, tok, "1", include_prompt=True), strength, top_k=50))
        requests = [Request([tok.start_id, *tok.encode(o)], settings=settings) for o in openings]
        start = time.perf_counter()
        outs = engine.generate(requests)
        seconds = time.perf_counter() - start
        full = [openings[i // args.fudge_samples] + outs[i].text for i in range(len(outs))]
        positive = label_probabilities(judge, full, judge.classes.index("1"))
        total = count = 0.0
        for i, o in enumerate(outs):  # SmolLM2's own log-probability of each continuation (fluency)
            prompt = requests[i // args.fudge_samples].prompt
            if o.ids:
                total += float(lm.score(torch.tensor([list(prompt) + o.ids]))[0, len(prompt) - 1:].sum())
                count += len(o.ids)
        out[f"strength_{strength:g}"] = {
            "judged_positive": float((positive > 0.5).mean()), "mean_p_positive": float(positive.mean()),
            "smollm2_mean_logprob": total / max(count, 1), "seconds": seconds, "example": full[0]}
        say(f"  fudge λ={strength}: {out[f'strength_{strength:g}']['judged_positive']:.2f} judged positive")
    return out


def section_contrastive(args, lm, tok, draft) -> dict:
    """WikiText-2 test paragraphs: their first ``--open-words`` words continued by greedy decoding,
    contrastive decoding (amateurs: the draft model, a bigram model of WikiText-2 training text on SmolLM2's
    ids) and contrastive search; Li et al. (2023) and Su et al. (2022) measure repetition, diversity,
    coherence and fluency of such open-ended continuations."""
    from lmlab.align.unlikelihood import repetition
    from lmlab.embeddings.sentence import sentence_encoder
    from lmlab.generate.contrastive_search import ContrastiveSearch
    from lmlab.generate.guided import Contrastive
    from lmlab.ngram.model import NgramLM

    lines = [line.strip() for line in open(DATA / "wikitext-2" / "test.txt", encoding="utf-8")]
    paragraphs = [line for line in lines if len(line.split()) > 60 and not line.startswith("=")][:args.open_prompts]
    openings = [" ".join(p.split()[:args.open_words]) for p in paragraphs]
    train = [line.strip() for line in open(DATA / "wikitext-2" / "train.txt", encoding="utf-8")]
    train = [line for line in train if line and not line.startswith("=")][:args.amateur_lines]
    bigram = NgramLM.fit_corpus(train, tok, order=2, smoothing="wb")
    plain = DecodingSettings(greedy=True, max_new_tokens=args.open_new_tokens)
    methods = {"greedy": plain, "contrastive_search": plain.with_(method=ContrastiveSearch(0.6, 4)),
               "contrastive_bigram_amateur": plain.with_(method=Contrastive(bigram, alpha=0.1))}
    if draft is not None:
        methods["contrastive_draft_amateur"] = plain.with_(method=Contrastive(draft, alpha=0.1))
    engine = Engine(lm, tok, decode_layout=False)
    encoder = sentence_encoder("minilm")
    opening_vectors = encoder(openings)
    out: dict = {"prompts": len(openings), "open_words": args.open_words, "new_tokens": args.open_new_tokens,
                 "bigram_amateur_lines": len(train)}
    for name, settings in methods.items():
        prompts = [[tok.start_id, *tok.encode(o)] for o in openings]
        start = time.perf_counter()
        outs = engine.generate([Request(p, settings=settings) for p in prompts])
        seconds = time.perf_counter() - start
        ids = [o.ids for o in outs]
        logprob = sum(float(lm.score(torch.tensor([p + i]))[0, len(p) - 1:].sum()) for p, i in zip(prompts, ids, strict=True))
        coherence = (opening_vectors * encoder([o.text for o in outs])).sum(1)
        reps = {n: repetition(ids, n)[f"seq_rep_{n}"] for n in (2, 3, 4)}
        out[name] = {"seq_rep_2": reps[2], "seq_rep_3": reps[3], "seq_rep_4": reps[4],
                     "diversity": float((1 - reps[2]) * (1 - reps[3]) * (1 - reps[4])),
                     "distinct_tokens": repetition(ids, 1)["distinct_tokens"],
                     "coherence_minilm": float(coherence.mean()),
                     "smollm2_mean_logprob": logprob / max(1, sum(len(i) for i in ids)),
                     "seconds": seconds, "example": openings[0] + "|" + outs[0].text}
        say(f"  {name}: rep-4 {reps[4]:.3f}, coherence {out[name]['coherence_minilm']:.3f}")
    return out


def section_selfconsistency(args, lm, tok) -> dict:
    """GSM8K test problems, zero-shot chat prompts: greedy vs self-consistency (majority vote over
    ``--sc-samples`` sampled solutions, answers extracted by the GSM8K task's flexible rule: the last number);
    ``any_sample_right`` is the share of problems where at least one sample has the right answer (the vote's
    ceiling)."""
    from lmlab.eval.tasks import BUILTIN, extract_answer, normalize_number_answer
    from lmlab.eval.utility import task_answer
    from lmlab.generate.select import MajorityVote

    rows = read_jsonl(DATA / "gsm8k" / "test.jsonl", args.sc_items)
    strict = BUILTIN["gsm8k"][0]["answer_regex"]
    gold = [normalize_number_answer(extract_answer(r["answer"], strict)) for r in rows]
    prompts = [chat_prompt(tok, [{"role": "user", "content": r["question"] + "\nSolve it step by step and end "
                                  "with the final number."}]) for r in rows]
    answer = task_answer("gsm8k")
    engine = Engine(lm, tok, decode_layout=False)
    greedy = DecodingSettings(greedy=True, max_new_tokens=args.sc_tokens)
    vote = DecodingSettings(best_of=args.sc_samples, n=args.sc_samples, temperature=args.sc_temperature, max_new_tokens=args.sc_tokens,
                            select=MajorityVote(answer))
    start = time.perf_counter()
    greedy_answers = [answer(o.text) for o in engine.generate([Request(p, settings=greedy) for p in prompts])]
    greedy_s = time.perf_counter() - start
    voted, any_right, votes, loads = [], 0, [], []
    start = time.perf_counter()
    for i, p in enumerate(prompts):  # one problem at a time: best_of rows share a batch already
        ranked = engine.generate([Request(p, settings=vote.with_(seed=i))])
        best = ranked[0]
        voted.append(best.info["answer"])
        any_right += any(c.info["answer"] == gold[i] for c in ranked)
        votes.append(best.info["votes"])
        loads.append(os.getloadavg()[0])
        say(f"  gsm8k {i + 1}/{len(prompts)}: greedy {greedy_answers[i]}, voted {best.info['answer']} "
            f"({best.info['votes']} votes), gold {gold[i]}")
    out = {"items": len(rows), "samples": args.sc_samples, "temperature": args.sc_temperature,
           "max_new_tokens": args.sc_tokens,
           "greedy_accuracy": sum(a == g for a, g in zip(greedy_answers, gold, strict=True)) / len(rows),
           "self_consistency_accuracy": sum(a == g for a, g in zip(voted, gold, strict=True)) / len(rows),
           "any_sample_right": any_right / len(rows), "mean_winning_votes": sum(votes) / len(votes),
           "greedy_seconds": greedy_s,
           "self_consistency_seconds": time.perf_counter() - start, "load": loads}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lookup-prompts", type=int, default=6)
    ap.add_argument("--lookup-tasks", nargs="+", default=list(GROUNDED), choices=list(GROUNDED))
    ap.add_argument("--lookup-tokens", type=int, default=10)
    ap.add_argument("--lookup-ngram", type=int, default=2)
    ap.add_argument("--draft", default=None, help="the draft model directory (bench/draft_model.py)")
    ap.add_argument("--draft-tokens", type=int, default=4)
    ap.add_argument("--chat-prompts", type=int, default=6)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--exact-prompts", type=int, default=20)
    ap.add_argument("--exact-tokens", type=int, default=48)
    ap.add_argument("--exact-drafters", nargs="+", default=["prompt_lookup", "ngram_on_prompt", "draft_model"],
                    choices=["prompt_lookup", "ngram_on_prompt", "draft_model"])
    ap.add_argument("--mt-model", default=None, help="an lmlab translation model directory (de→en)")
    ap.add_argument("--mt-items", type=int, default=200)
    ap.add_argument("--mbr-samples", type=int, default=16)
    ap.add_argument("--fudge-train", type=int, default=20000)
    ap.add_argument("--fudge-prompts", type=int, default=8)
    ap.add_argument("--fudge-samples", type=int, default=4)
    ap.add_argument("--fudge-tokens", type=int, default=24)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.0, 2.0, 5.0])
    ap.add_argument("--open-prompts", type=int, default=16, help="contrastive: WikiText-2 openings")
    ap.add_argument("--open-words", type=int, default=24)
    ap.add_argument("--open-new-tokens", type=int, default=64)
    ap.add_argument("--amateur-lines", type=int, default=6000, help="WikiText-2 training lines of the bigram amateur")
    ap.add_argument("--sc-items", type=int, default=30, help="self-consistency: GSM8K test problems")
    ap.add_argument("--sc-samples", type=int, default=8)
    ap.add_argument("--sc-temperature", type=float, default=0.7)
    ap.add_argument("--sc-tokens", type=int, default=192)
    ap.add_argument("--no-peer", action="store_true", help="skip transformers")
    ap.add_argument("--work", default="runs/decoding-bench", help="scratch directory (the draft exported for HF)")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s): {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    result: dict = {"machine": machine(), "load_before": os.getloadavg()[0]}
    lm, tok = load_model("smollm2-135m-instruct")
    draft = load_model(args.draft)[0].eval() if args.draft else None
    hf = None if args.no_peer or not {"lookup", "draft"} & set(only) else hf_smollm2()
    for section in only:
        say(f"{section} ...")
        if section == "lookup":
            result["lookup"] = section_lookup(args, lm, tok, hf)
        elif section in ("draft", "server") and draft is None:
            result[section] = {"skipped": "no --draft model (make one with bench/draft_model.py)"}
        elif section == "draft":
            result["draft"] = section_draft(args, lm, tok, hf, draft)
        elif section == "server":
            result["server"] = section_server(args, lm, tok, draft)
        elif section == "exactness":
            result["exactness"] = section_exactness(args, lm, tok, draft)
        elif section == "mbr":
            result["mbr"] = (section_mbr(args) if args.mt_model else
                             {"skipped": "no --mt-model (an lmlab de→en translation model directory)"})
        elif section == "fudge":
            result["fudge"] = section_fudge(args, lm, tok)
        elif section == "contrastive":
            result["contrastive"] = section_contrastive(args, lm, tok, draft)
        elif section == "selfconsistency":
            result["selfconsistency"] = section_selfconsistency(args, lm, tok)
        say(json.dumps(result.get(section), default=str)[:600])
    result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
