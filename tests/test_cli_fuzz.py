"""Every verb's argparse tree, fed what a new user may type: out-of-range numbers, and missing, empty,
binary or unwritable paths. Each case must end normally (exit 0: the value was valid) or with exit 1
and one line ``lmlab: error: …`` — never an internal error, a traceback or a second line.

The tree is walked, not listed: a verb or argument added later without a base command line here, or a
string argument not classified below as an input path, an output path or plain text, fails the test.
Everything runs in-process on tiny fixtures (a 2-layer character transformer, a word-level n-gram, a
toy BEIR folder …); ``lmlab serve`` gets everything but the listening socket.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
from pathlib import Path

import pytest
import torch
from align_tiny import preference_rows, prompt_rows, tiny_chat_tokenizer
from sft_tiny import rows, save_tiny, write_jsonl
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.cli import build_parser, main

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat and the log"] * 5
SECONDS_PER_CASE = 30

# --- what every leaf command is given when it is not the argument under test -------------------------
# "{name}" is a fixture path (see `world`); a ("dest", value) pair is a positional argument.
QUICK_ALIGN = ["--steps", "1", "--batch-size", "2", "--eval-rows", "2", "--threads", "1"]
BASE: dict[str, list] = {
    "adapters list": [("paths", "{root}")],
    "agent run": [("task", "what is 2+2?"), "--model", "{agent_model}", "--max-steps", "1", "--max-tokens", "20",
                  "--trace", "{out}/trace.jsonl"],
    "agent trace": [("file", "{trace}")],
    "align reward": ["--model", "{chat_model}", "--data", "{prefs}", "--max-length", "24", "--max-prompt-length", "12",
                     "--out", "{out}/rm",
                     *QUICK_ALIGN],
    **{f"align {verb}": ["--model", "{chat_model}", "--data", "{prefs}", "--max-length", "24",
                         "--max-prompt-length", "12", "--out", f"{{out}}/{verb}", *QUICK_ALIGN] for verb in ("dpo", "kto", "simpo", "orpo")},
    **{f"align {verb}": ["--model", "{chat_model}", "--prompts", "{prompts}", "--group-size", "2",
                         "--prompts-per-step", "1", "--max-new-tokens", "2", "--out", f"{{out}}/{verb}", *QUICK_ALIGN]
       for verb in ("grpo", "rloo", "reinforce", "ppo")},
    "align-words": ["--source", "{source}", "--target", "{target}", "--iterations", "1", "--out", "{out}/ibm"],
    "adapters merge": ["--model", "{chat_model}", "--adapter", "{adapter}", "--out", "{out}/merged"],
    "bench": ["--model", "{chat_model}", "--batch-sizes", "1", "--prompt-tokens", "4", "--new-tokens", "2",
              "--repeats", "1", "--warmup", "0"],
    "chat": ["--model", "{chat_model}", "--max-new-tokens", "2"],
    "classify train": ["--data", "{labelled}", "--out", "{out}/clf", "--kind", "naive-bayes"],
    "classify eval": ["--model", "{classifier}", "--data", "{labelled}"],
    "classify predict": ["--model", "{classifier}", ("texts", "a good film")],
    "data list": [],
    "data tokenize": [("corpus", "{corpus}"), "--out", "{out}/shards"],
    "data self-instruct": ["--model", "{agent_model}", "--seeds", "{seeds}", "--out", "{out}/si.jsonl", "-n", "1",
                           "--max-prompts", "1", "--batch-size", "1", "--instruction-tokens", "4",
                           "--instance-tokens", "4"],
    "data evol-instruct": [("data", "{alpaca}"), "--model", "{agent_model}", "--out", "{out}/evol.jsonl",
                           "--instruction-tokens", "4", "--response-tokens", "4"],
    "data mix": ["--tasks", "mine={mix_task}", "--templates", "{mix_templates}", "--total", "4",
                 "--out", "{out}/mix.jsonl"],
    "detect": [("file", "{corpus}"), "--model", "{chat_model}", "--reference-model", "{chat_model}",
               "--min-tokens", "2", "--quiet"],
    "embed": ["--input", "{corpus}"],
    "eval perplexity": ["--model", "{chat_model}", "--data", "{corpus}"],
    "eval bleu": ["--hyp", "{corpus}", "--ref", "{corpus}"],
    "eval chrf": ["--hyp", "{corpus}", "--ref", "{corpus}"],
    "eval rouge": ["--hyp", "{corpus}", "--ref", "{corpus}"],
    "eval calibration": ["--predictions", "{predictions}"],
    "eval passk": ["--samples", "{samples}", "--problems", "{problems}", "--k", "1", "--timeout", "5"],
    "eval task": ["--model", "unigram", "--train", "{corpus}", "--tasks", "{task}"],
    "eval compare": ["--judgements", "{judgements}"],
    "eval bertscore": ["--hyp", "{corpus}", "--ref", "{corpus}"],
    "eval mauve": ["--human", "{corpus}", "--generated", "{corpus}", "--clusters", "2"],
    "eval longcontext": ["--model", "{agent_model}", "--task", "needle", "--lengths", "256", "--depths", "0.5",
                         "--trials", "1", "--haystack", "{corpus}"],
    "eval retrieval": [("folder", "{beir}"), "--no-cache"],
    "finetune": ["--model", "{chat_model}", "--method", "lora", "--data", "{conversations}", "--eval-rows", "2",
                 "--steps", "1", "--batch-size", "2", "--max-seq-len", "32", "--out", "{out}/ft"],
    "generate": ["--model", "{chat_model}", "--prompt", "the", "--max-new-tokens", "2"],
    "inspect attention": ["--model", "{chat_model}", "--prompt", "the cat", "--layer", "0", "--out", "{out}/att.png"],
    "inspect logit-lens": ["--model", "{chat_model}", "--prompt", "the cat", "--top", "2"],
    "inspect patch": ["--model", "{chat_model}", "--clean", "a cat", "--corrupted", "a dog", "--right", "s",
                      "--wrong", "a"],
    "inspect steer": ["--model", "{chat_model}", "--positive", "good", "--negative", "bad", "--layer", "1",
                      "--prompt", "the", "--max-new-tokens", "2"],
    "inspect probe": ["--model", "{chat_model}", "--data", "{labelled}", "--limit", "20", "--layer", "1"],
    "inspect sae": ["--model", "{chat_model}", "--data", "{corpus}", "--layer", "1", "--features", "32", "--k", "4",
                    "--steps", "1", "--batch-size", "8", "--max-texts", "4", "--show", "1", "--out", "{out}/sae"],
    "ngram train": [("corpus", "{corpus}"), "-o", "{out}/m.arpa", "--order", "2", "--smoothing", "wb"],
    "ngram eval": [("model", "{arpa}"), ("corpus", "{corpus}")],
    "ngram generate": [("model", "{arpa}"), "--max-new-tokens", "3"],
    "ngram prune": [("model", "{arpa}"), "-o", "{out}/p.arpa", "--entropy", "1e-3"],
    "ngram convert": [("input", "{arpa}"), ("output", "{out}/converted")],
    "pretrain": ["--family", "gpt2", "--train", "{corpus}", "--out", "{out}/run", "--d-model", "8",
                 "--n-layers", "1", "--n-heads", "2", "--steps", "1", "--context", "8", "--batch-size", "2"],
    "quantize": ["--model", "{chat_model}", "--method", "int8", "--out", "{out}/q"],
    "quickstart": ["--out", "{out}/qs", "--steps", "0", "--answer-tokens", "0", "--samples", "1"],
    "rag index": [("paths", "{corpus}"), "--out", "{out}/idx"],
    "rag ask": [("question", "where is the cat?"), "--index", "{rag_index}", "--no-generate"],
    "scaling run": ["--out", "{out}/grid", "--train", "{corpus}", "--valid", "{corpus}", "--sizes", "16x1",
                    "--tokens", "32", "--tokenizer", "char", "--context", "8", "--batch-size", "2", "--eval-tokens", "16"],
    "scaling fit": [("runs", "{scaling_runs}"), "--holdout", "1", "--plot", "{out}/fit.png"],
    "scaling predict": [("runs", "{scaling_fitted}"), "--compute", "1e18"],
    "serve": ["--model", "{chat_model}", "--embedding-model", "none", "--port", "8000"],
    "tag train": [("data", "{conll}"), "--out", "{out}/tagger", "--steps", "1", "--batch-size", "2"],
    "tag eval": [("data", "{conll}"), "--model", "{tagger}"],
    "tag predict": ["--model", "{tagger}", ("texts", "Peter visited Paris")],
    "tokenizer train": [("corpus", "{corpus}"), "--kind", "bpe", "--vocab-size", "40", "--out", "{out}/tok"],
    "tokenizer encode": [("text", "the cat"), "--tokenizer", "{tokenizer}"],
    "tokenizer decode": [("ids", "4"), "--tokenizer", "{tokenizer}"],
    "tokenizer info": [("tokenizer", "{tokenizer}")],
    "tokenizer compare": [("corpus", "{corpus}"), "--tokenizer", "{tokenizer}"],
    "translate": ["--model", "{seq2seq}", "--input", "{corpus}", "--limit", "2", "--max-new-tokens", "3"],
    "vae": [("train", "{corpus}"), "--out", "{out}/vae", "--steps", "1", "--batch-size", "2", "--d-embed", "4",
            "--d-hidden", "4", "--d-latent", "2"],
    "simcse": [("texts", "{corpus}"), "--model", "{encoder}", "--out", "{out}/simcse", "--steps", "1",
               "--batch-size", "2", "--max-length", "8"],
    "clip": ["--out", "{out}/clip", "--steps", "1", "--batch-size", "2", "--d-model", "4", "--n-heads", "2",
             "--image-layers", "1"],
    "word2vec train": ["--data", "{corpus}", "--out", "{out}/w2v", "--min-count", "1", "--dim", "4",
                       "--epochs", "1", "--threads", "1"],
    "word2vec similar": ["--vectors", "{vectors}", ("words", "cat")],
    "word2vec analogy": ["--vectors", "{vectors}", ("a", "cat"), ("b", "dog"), ("c", "mat")],
    "word2vec eval": ["--vectors", "{vectors}", "--similarity", "{pairs}", "--analogies", "{analogies}"],
    "word2vec plot": ["--vectors", "{vectors}", "--out", "{out}/p.png", ("words", "cat"), ("words", "dog"),
                      ("words", "mat")],
}

# --- string arguments: input paths (fed missing, empty, binary), output paths (fed unwritable) ---------
OUT = {"--out", "-o", "--output", "--save", "--export", "--plot", "--reliability", "--predictions@eval task",
       "--save-judgements", "--run-dir", "output@ngram convert", "--cache@eval task", "--trace@agent run",
       "--memory@agent run", "--predictions@tag eval", "--attention-plot"}
IN = {"--model", "--adapter", "--data", "--train", "--valid", "--tokenizer", "--against", "--hyp", "--ref",
      "--predictions", "--heldout", "--held-out", "--samples", "--problems", "--tasks", "--judgements",
      "--answers", "--human", "--generated", "--input", "--eval-data", "--config", "--resume", "--source",
      "--target", "--valid-source", "--valid-target", "--prompts-file", "--vectors", "--similarity",
      "--analogies", "--reference", "--index", "--corpus", "--backbone", "--eval", "--encoder",
      "--embedding-model", "corpus", "model", "input", "folder", "paths", "tokenizer", "--prompts", "--eval-prompts",
      "--reward-model", "--judge-model", "--speculative", "--contrastive-amateur", "--fudge", "--reward@generate",
      "--json-schema", "--grammar", "--haystack", "--calibration", "--source-tokenizer", "task@eval task",
      "input_spec", "file", "data", "runs", "train@vae", "texts@simcse", "--positives", "--reference-model",
      "--seeds", "--templates"}
TEXT_ARGS = {"--prompt", "--interpolate", "--system", "--stop", "--question", "--text", "--host", "--model-id", "--api-key",
             "--device", "--dtype", "--k@eval passk", "--targets", "--field", "--smoothing",
             "--pair", "--method", "--split", "--variant", "--stopwords", "--stemmer", "--pattern", "--fusion",
             "--chunk", "--cite", "texts", "question", "words", "a", "b", "c", "text", "--negative-words",
             "--cache@eval retrieval", "task@agent run", "--base-url", "--tools", "--allow-fetch", "--instructions",
             "--first-tool", "--answer-pattern", "--block-topics", "--reward", "--format-regex", "--regex",
             "--fudge-label", "--reward-label", "--answer-task", "--ruler-tasks", "--column", "--target-language",
             "--clean", "--corrupted", "--right", "--wrong", "--sender", "--positive", "--negative",
             "--family@scaling run", "--holdout-runs",
             "--extractor", "--entity-types", "--mode@rag ask", "--search@rag ask",
             "--tasks@data mix", "--rates", "--operations"}
# comma-separated numbers: fed a negative and a non-number
NUMBER_LISTS = {"--lengths", "--depths", "--batch-sizes", "--sizes", "--tokens", "--budget", "--compute", "--params"}
# a positional that is the same as an option of the base command line: dropped from it when the positional is fuzzed
SAME_AS = {"task@eval task": "--tasks", "input_spec@translate": "--input"}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every leaf command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


def name_of(action: argparse.Action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def kind_of(verb: str, action: argparse.Action) -> str | None:
    """'int', 'float', 'setting' (pretrain's --key value), 'in', 'out', 'text' or None (nothing to fuzz)."""
    if action.nargs == 0 or action.choices is not None or action.dest in ("help", "json", "quiet", "debug"):
        return None
    if action.type in (int, float):
        return action.type.__name__
    if getattr(action.type, "__name__", "") == "_value":
        return "setting"
    if getattr(action.type, "__name__", "") == "_budget":
        return "budget"
    if set(action.option_strings) & NUMBER_LISTS:
        return "numbers"
    for name in (*action.option_strings, action.dest):
        for key in (f"{name}@{verb}", name):
            for kind, names in (("out", OUT), ("in", IN), ("text", TEXT_ARGS)):
                if key in names:
                    return kind
    raise AssertionError(f"`lmlab {verb}` {name_of(action)}: classify it in {__name__} (IN, OUT or TEXT_ARGS)")


VALUES = {"int": ["-1", "0"], "float": ["-1", "nan", "inf"], "setting": ["-1", "0"], "budget": ["-1", "0", "nan", "inf"],
          "numbers": ["-1", "nan"],
          "in": ["{missing}", "{empty}", "{binary}", "{empty_dir}"], "out": ["{unwritable}"], "text": []}


def cases():
    for verb, parser in leaves(build_parser()):
        for action in parser._actions:
            kind = kind_of(verb, action)
            for value in VALUES.get(kind, []):
                yield pytest.param(verb, action, value, id=f"{verb.replace(' ', '-')}:{name_of(action)}={value}")


def test_every_leaf_has_a_base_command_line():
    assert {verb for verb, _ in leaves(build_parser())} == set(BASE)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny files every base command line can run on, and the bad paths fed to the cases."""
    from lmlab.classify import NaiveBayes, save_classifier
    from lmlab.models import save_model_dir
    from lmlab.models.config import TransformerConfig
    from lmlab.models.seq2seq import EncoderDecoder
    from lmlab.models.transformer import TransformerLM
    from lmlab.ngram import NgramLM
    from lmlab.ngram.arpa import write_arpa
    from lmlab.peft import LoraConfig, apply_lora, save_adapter
    from lmlab.retrieval.rag import build_rag_index
    from lmlab.tokenizers import WordLevelTokenizer

    root = tmp_path_factory.mktemp("fuzz")
    w = {"root": root, "out": root / "out"}

    def text(name: str, content: str) -> Path:
        (root / name).write_text(content, encoding="utf-8")
        return root / name

    w["corpus"] = text("corpus.txt", "\n".join(TEXT) + "\n")
    w["labelled"] = text("labelled.tsv", "".join(f"{t}\t{'pos' if 'cat' in t else 'neg'}\n" for t in TEXT))
    w["conversations"] = write_jsonl(root / "chat.jsonl", rows(8))
    w["seeds"] = write_jsonl(root / "seeds.jsonl", [{"instruction": f"Say {t}.", "instances": [{"input": "", "output": t}],
                                                     "is_classification": i < 2} for i, t in enumerate(TEXT[:9])])
    w["alpaca"] = write_jsonl(root / "alpaca.jsonl", [{"instruction": t, "input": "", "output": "ok"} for t in TEXT[:2]])
    w["mix_task"] = write_jsonl(root / "task.jsonl", [{"text": t, "label": t.split()[1]} for t in TEXT[:4]])
    w["mix_templates"] = text("templates.json", json.dumps({"mine": [{"instruction": "{text}", "output": "{label}"}]}))
    w["chat_model"] = save_tiny(root / "chat_model")
    word = WordLevelTokenizer("word").train(TEXT)
    w["tokenizer"] = word.save(root / "tokenizer.json")
    arpa = NgramLM.fit_corpus(TEXT, word, order=2, smoothing="wb")
    w["arpa"] = write_arpa(arpa, word, root / "m.arpa")
    torch.manual_seed(0)
    seq2seq = EncoderDecoder(TransformerConfig.from_preset("bart", vocab_size=word.vocab_size, d_model=8,
                                                           n_layers=1, n_heads=2, context_length=16),
                             {"bos_id": word.bos_id, "eos_id": word.eos_id, "pad_id": word.pad_id})
    w["seq2seq"] = save_model_dir(root / "seq2seq", *seq2seq.to_state(), tokenizer=word)
    from sft_tiny import tiny_model, tiny_tokenizer

    lora = apply_lora(tiny_model(tiny_tokenizer()), LoraConfig(r=2, targets=["q_proj"]))
    w["adapter"] = save_adapter(lora, root / "adapter")
    w["classifier"] = root / "classifier"
    save_classifier(w["classifier"], NaiveBayes().fit(TEXT, ["pos" if "cat" in t else "neg" for t in TEXT]))
    words = list(dict.fromkeys(" ".join(TEXT).split()))
    w["vectors"] = text("vectors.txt", f"{len(words)} 2\n" + "".join(f"{x} {i % 3 - 1} {i % 2 + 0.5}\n"
                                                                       for i, x in enumerate(words)))
    w["pairs"] = text("pairs.tsv", "cat\tdog\t7\nmat\tlog\t5\ncat\tlog\t2\n")
    w["analogies"] = text("analogies.txt", ": x\ncat dog mat log\n")
    w["predictions"] = text("pred.jsonl", '{"confidence": 0.9, "correct": true}\n{"confidence": 0.6, "correct": false}\n')
    w["problems"] = text("problems.jsonl", json.dumps({"task_id": "p0", "prompt": "def sq(x):\n", "entry_point": "sq",
                                                       "test": "def check(f):\n    assert f(3) == 9\n"}) + "\n")
    w["samples"] = text("samples.jsonl", json.dumps({"task_id": "p0", "completion": "    return x * x\n"}) + "\n")
    text("items.jsonl", json.dumps({"q": "the", "choices": ["cat", "zebra"], "gold": 0}) + "\n")
    w["task"] = text("task.json", json.dumps({"name": "mini", "type": "multiple_choice", "data": "items.jsonl",
                                              "prompt": "{q}"}))
    w["judgements"] = text("judgements.jsonl", "".join(json.dumps({"a": a, "b": b, "winner": "a"}) + "\n"
                                                       for a, b in (("x", "y"), ("y", "z"), ("x", "z"))))
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(TEXT[:4])))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cat mat"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    w["beir"] = beir
    w["rag_index"] = root / "rag"
    build_rag_index([w["corpus"]], w["rag_index"])
    w["agent_model"] = save_final_answer_model(root / "agent_model")
    w["trace"] = root / "trace.jsonl"
    assert main(["agent", "run", "what is 2+2?", "--model", str(w["agent_model"]), "--max-steps", "1",
                 "--max-tokens", "20", "--trace", str(w["trace"]), "--quiet"]) == 0
    w["prefs"] = write_jsonl(root / "prefs.jsonl", preference_rows(12))
    w["prompts"] = write_jsonl(root / "prompts.jsonl", prompt_rows(6))
    w["source"] = text("source.de", "das Haus\ndas Buch\nein Buch\n")
    w["target"] = text("target.en", "the house\nthe book\na book\n")
    w["conll"] = text("tags.conll", "Peter X X B-PER\nvisited X X O\nParis X X B-LOC\n\n"
                                    "Anna X X B-PER\nMeyer X X I-PER\nsmiled X X O\n\n" * 2)
    encoder = TransformerLM(TransformerConfig.from_preset("bert", vocab_size=word.vocab_size, d_model=8, n_layers=1,
                                                          n_heads=2, context_length=16))
    w["encoder"] = save_model_dir(root / "encoder", *encoder.to_state(), tokenizer=word)
    w["tagger"] = root / "tagger"
    assert main(["tag", "train", str(w["conll"]), "--out", str(w["tagger"]), "--steps", "1", "--batch-size", "2",
                 "--quiet"]) == 0
    from lmlab.core.io import write_json

    for name, size in (("scaling_runs", 6), ("scaling_fitted", 6)):  # runs following L = 2 + 40/N^0.3 + 60/D^0.3
        runs = [{"name": f"n{n}-d{d}", "params": n, "tokens": d, "loss": 2 + 40 / n ** 0.3 + 60 / d ** 0.3}
                for n, d in [(1e5, 1e6), (1e5, 1e7), (1e6, 1e6), (1e6, 1e7), (1e7, 1e6), (1e7, 1e7)][:size]]
        for run in runs:
            write_json(root / name / run["name"] / "result.json", run)
        w[name] = root / name
    write_json(w["scaling_fitted"] / "fit.json", {"E": 2.0, "A": 40.0, "B": 60.0, "alpha": 0.3, "beta": 0.3,
                                                  "runs": sorted(r["name"] for r in runs)})
    # what the cases feed
    w["missing"] = root / "no" / "such" / "file.txt"
    w["empty"] = text("empty.txt", "")
    w["binary"] = root / "binary.bin"
    w["binary"].write_bytes(bytes(range(256)) * 8)
    w["empty_dir"] = root / "empty_dir"
    w["empty_dir"].mkdir()
    w["unwritable"] = w["corpus"] / "below" / "a-file"  # beneath a regular file: no one can create it
    return w


def save_final_answer_model(path: Path) -> Path:
    """A 1-layer model that always answers at once: its blocks add nothing and every embedding has 1 in
    dimension 0, which only the output rows of a newline, the end and "F" read (in that order of
    preference), so greedy decoding under the ReAct grammar writes "Final Answer: F\\n" (a ReAct step
    needs a context of about 1,000 characters)."""
    from lmlab.models import save_model_dir
    from lmlab.models.config import TransformerConfig
    from lmlab.models.transformer import TransformerLM

    tok = tiny_chat_tokenizer()
    cfg = TransformerConfig.from_preset("llama", vocab_size=tok.vocab_size, d_model=8, n_layers=1, n_heads=2,
                                        n_kv_heads=1, d_ff=16, context_length=4096)
    torch.manual_seed(0)
    lm = TransformerLM(cfg, {"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id, "unk_id": tok.unk_id})
    with torch.no_grad():
        lm.embed.weight[:, 0] = 1.0
        for block in lm.blocks:
            block.attn.o_proj.weight.zero_()
            block.mlp.down.weight.zero_()
        lm.head.weight.zero_()
        for token, logit in (("\n", 30.0), ("F", 10.0)):
            lm.head.weight[tok.encode(token)[0], 0] = logit
        lm.head.weight[tok.eos_id, 0] = 20.0
    return save_model_dir(path, *lm.eval().to_state(), tokenizer=tok)


class TookTooLong(BaseException):
    """Raised by the alarm: a case that runs this long has accepted a value it should have refused."""


def argv_for(verb: str, world: dict, action: argparse.Action | None = None, value: str | None = None) -> list[str]:
    """The base command line of ``verb``, with ``action`` given ``value`` (an option is appended; a positional
    replaces the base's value, or is appended, dropping the option it is the same as)."""
    positional = action is not None and not action.option_strings
    argv, replaced, base = verb.split(), False, list(BASE[verb])
    if positional and f"{action.dest}@{verb}" in SAME_AS:
        at = base.index(SAME_AS[f"{action.dest}@{verb}"])
        del base[at:at + 2]
    for token in base:
        if isinstance(token, tuple):
            dest, token = token
            if positional and dest == action.dest:
                if replaced:
                    continue
                token, replaced = value, True
        argv.append(token.format(**world))
    if action is not None and (action.option_strings or not replaced):
        argv += [*action.option_strings[:1], value.format(**world)]
    return argv + ["--quiet"]


def run_case(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat\n"))
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TookTooLong()))
    signal.alarm(SECONDS_PER_CASE)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refusing the value
        code = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_listening(monkeypatch):
    """``lmlab serve`` does everything but listen: uvicorn's server returns at once. Training verbs draw no
    curves.png, as when matplotlib is missing (two figures cost 2-3 s a run, the same for every value fed;
    tests/test_align_cli.py and tests/test_train_trainer.py check the plots)."""
    import uvicorn

    import lmlab.align.recipes
    import lmlab.train.trainer

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: None)
    for module in (lmlab.align.recipes, lmlab.train.trainer):
        monkeypatch.setattr(module, "plot_metrics", lambda *a, **k: False)


@pytest.mark.parametrize("verb", sorted(BASE))
def test_base_command_lines_run(verb, world, capsys, monkeypatch):
    code, err = run_case(argv_for(verb, world), capsys, monkeypatch)
    assert code == 0, err


@pytest.mark.parametrize("verb,action,value", list(cases()))
def test_bad_value_is_refused_in_one_line_or_accepted(verb, action, value, world, capsys, monkeypatch):
    argv = argv_for(verb, world, action, value)
    code, err = run_case(argv, capsys, monkeypatch)
    if code == 0:
        assert value not in ("nan", "inf"), f"{' '.join(argv)} was accepted"  # no option means these
        return
    lines = [line for line in err.strip().splitlines() if not line.startswith("lmlab: warning:")]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("lmlab: error:"), f"{' '.join(argv)}\n{err}"
    assert "internal error" not in lines[0], lines[0]


# --- the cases a new user met (issue 26, item 3) ------------------------------------------------------
def one_error_line(argv: list[str], capsys, monkeypatch) -> str:
    code, err = run_case(argv, capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("lmlab: error:"), err
    return lines[0]


def test_stupid_backoff_alpha_out_of_range_is_refused(world, capsys, monkeypatch):
    for alpha in ("-1", "0", "1.5"):
        line = one_error_line(["ngram", "train", "--smoothing", "stupid", "--alpha", alpha, str(world["corpus"]),
                               "-o", str(world["out"] / "x.arpa")], capsys, monkeypatch)
        assert "--alpha" in line
    assert not (world["out"] / "x.arpa").exists()
    line = one_error_line(["ngram", "train", "--smoothing", "mkn", "--alpha", "0.4", str(world["corpus"]),
                           "-o", str(world["out"] / "x.arpa")], capsys, monkeypatch)
    assert "--alpha does not apply to --smoothing mkn" in line  # refused, not ignored


def test_unwritable_outputs_are_refused_before_the_work(world, capsys, monkeypatch):
    line = one_error_line(["ngram", "train", str(world["corpus"]), "-o", str(world["unwritable"])],
                          capsys, monkeypatch)
    assert f"cannot write --output {world['unwritable']}" in line and "is a file, not a directory" in line
    import lmlab.train

    monkeypatch.setattr(lmlab.train, "train", lambda *a, **k: pytest.fail("finetune trained before checking --out"))
    line = one_error_line(argv_for("finetune", world) + ["--out", str(world["unwritable"])], capsys, monkeypatch)
    assert "cannot write --out" in line


def test_binary_finetune_data_is_one_clear_line(world, capsys, monkeypatch):
    line = one_error_line(argv_for("finetune", world) + ["--data", str(world["binary"])], capsys, monkeypatch)
    assert "binary file" in line and str(world["binary"]) in line


def test_serve_checks_the_port_before_loading_the_model(world, capsys, monkeypatch):
    line = one_error_line(["serve", "--model", str(world["missing"]), "--port", "99999"], capsys, monkeypatch)
    assert "--port = 99999 is out of range" in line and "65535" in line


@pytest.mark.parametrize("extra", [["--beam-size", "0"], ["--best-of", "0"], ["--stop-id", "100000"],
                                   ["--num-samples", "0"], ["--length-penalty", "nan"]])
def test_generate_refuses_what_it_would_ignore(extra, world, capsys, monkeypatch):
    """Refused, naming the flag typed (the library's setting names, n or length_penalty, are not the CLI's)."""
    line = one_error_line(argv_for("generate", world) + extra, capsys, monkeypatch)
    assert line.startswith(f"lmlab: error: {extra[0]} ")
