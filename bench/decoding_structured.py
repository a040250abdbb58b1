"""Constrained decoding on SmolLM2's vocabulary: lmlab against xgrammar and llguidance, in one run.

For each JSON schema: compile time, and the per-token time of computing the allowed-token mask and
advancing the matcher along a valid instance (tokenised by SmolLM2's tokenizer) — cold (the first
pass after compiling) and warm (the same schema again: lmlab's masks are cached per automaton state,
xgrammar precomputes its adaptive cache at compile time, llguidance computes every mask) — tools
interleaved per schema. Then which of a set of feature schemas each tool compiles, and SmolLM2
generating under lmlab's constraint and xgrammar's (greedy, chat prompts): validity with
``jsonschema`` and the per-token decode time against unconstrained decoding, interleaved.

    python bench/decoding_structured.py            # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

SCHEMAS = {
    "person": ({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0,
                                                                                    "maximum": 150},
                                                 "email": {"type": "string"}}, "required": ["name", "age"]},
               {"name": "Ada Lovelace", "age": 36, "email": "ada@example.org"}),
    "product": ({"type": "object", "properties": {"id": {"type": "integer"}, "title": {"type": "string"},
                                                  "price": {"type": "number"}, "tags": {"type": "array", "items": {
                                                      "type": "string"}}, "in_stock": {"type": "boolean"}},
                 "required": ["id", "title", "price", "tags", "in_stock"], "additionalProperties": False},
                {"id": 1042, "title": "Mechanical keyboard, brown switches", "price": 89.5,
                 "tags": ["keyboard", "usb", "office"], "in_stock": True}),
    "address_book": ({"type": "object", "properties": {"owner": {"type": "string"}, "contacts": {
        "type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"},
            "city": {"enum": ["Paris", "London", "Berlin", "Madrid"]}}, "required": ["name", "phone", "city"]}}},
        "required": ["owner", "contacts"]},
        {"owner": "Sam", "contacts": [{"name": "Léa Martin", "phone": "555-0199", "city": "Paris"},
                                      {"name": "Tom", "phone": "555-0123", "city": "London"}]}),
    "event": ({"type": "object", "properties": {"title": {"type": "string", "maxLength": 40},
                                                "date": {"type": "string", "format": "date"},
                                                "attendees": {"type": "integer", "minimum": 1, "maximum": 500},
                                                "online": {"type": "boolean"}},
               "required": ["title", "date", "attendees"]},
              {"title": "Quarterly planning — Q3", "date": "2025-07-14", "attendees": 42, "online": False}),
    "tree": ({"$defs": {"node": {"type": "object", "properties": {"label": {"type": "string"}, "children": {
        "type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["label", "children"]}},
        "$ref": "#/$defs/node"},
        {"label": "root", "children": [{"label": "a", "children": []}, {"label": "b", "children": [
            {"label": "b1", "children": []}]}]}),
    "any_json": ({"type": "object"}, {"model": "SmolLM2", "params": 135000000, "layers": [30, {"heads": 9}],
                                      "note": "open weights, Apache-2.0", "ok": True, "score": -1.5e-3}),
    "tool_call": ({"type": "object", "properties": {"op": {"enum": ["add", "sub", "mul", "div"]},
                                                    "a": {"type": "number"}, "b": {"type": "number"}},
                   "required": ["op", "a", "b"], "additionalProperties": False},
                  {"op": "mul", "a": 6, "b": 7}),
    "long_text": ({"type": "object", "properties": {"summary": {"type": "string"}, "keywords": {
        "type": "array", "items": {"type": "string"}, "maxItems": 5}}, "required": ["summary", "keywords"]},
        {"summary": "The model reads a passage and writes a short summary of its main claims, "
                    "citing the numbers it found and naming the people involved, in plain English.",
         "keywords": ["summary", "passage", "claims"]}),
}
FEATURES = [
    {"type": "string", "minLength": 2, "maxLength": 4}, {"type": "string", "pattern": "^[a-z]{3}[0-9]$"},
    {"type": "string", "format": "date-time"}, {"type": "string", "format": "uuid"},
    {"type": "string", "format": "email"}, {"type": "integer", "minimum": -50, "maximum": 50},
    {"type": "integer", "exclusiveMinimum": 0}, {"type": "number", "minimum": 0, "maximum": 1},
    {"enum": [1, "two", None]}, {"const": {"a": 1}}, {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    {"oneOf": [{"type": "integer"}, {"type": "string"}]}, {"type": "array", "items": {"type": "integer"},
                                                           "minItems": 1, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    {"type": "array", "uniqueItems": True}, {"type": "number", "multipleOf": 5},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
    {"type": "object", "minProperties": 1}, {"allOf": [{"type": "integer"}, {"minimum": 3}]},
    {"type": "string", "format": "hostname"}, {"if": {"type": "string"}, "then": {"minLength": 1}},
]


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Lmlab:
    name = "lmlab"

    def __init__(self, tok) -> None:
        from lmlab.generate.constrain import token_index

        self.tok, self.index = tok, token_index(tok)

    def compile(self, schema):
        from lmlab.generate.constrain import Automaton, CompiledConstraint, schema_grammar

        compiled = CompiledConstraint(Automaton(schema_grammar(schema)), self.index)
        compiled.precompute()  # as compile_constraint does: the masks of the states tokens reach
        return compiled

    def walk(self, compiled, ids) -> list[float]:
        times, config = [], compiled.start
        for i in ids:
            start = time.perf_counter()
            mask = compiled.mask(config)
            config = compiled.move(config, i)
            times.append(time.perf_counter() - start)
            assert mask[i], f"lmlab refused token {self.tok.decode([i])!r}"
        assert compiled.accepts(config)
        return times


class XGrammar:
    name = "xgrammar"

    def __init__(self, tok) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        vocab = [tok.id_to_token(i) for i in range(tok.vocab_size)]
        self.info = xgr.TokenizerInfo(vocab, xgr.VocabType.BYTE_LEVEL, vocab_size=tok.vocab_size,
                                      stop_token_ids=[tok.eos_id])
        self.compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        self.bitmask = xgr.allocate_token_bitmask(1, tok.vocab_size)

    def compile(self, schema):
        return self.compiler.compile_json_schema(schema, any_whitespace=False, separators=(",", ":"))

    def walk(self, compiled, ids) -> list[float]:
        matcher = self.xgr.GrammarMatcher(compiled)
        times = []
        for i in ids:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(self.bitmask)
            ok = matcher.accept_token(i)
            times.append(time.perf_counter() - start)
            assert ok, f"xgrammar refused token {i}"
        return times


class LLGuidance:
    name = "llguidance"

    def __init__(self, tok) -> None:
        import llguidance
        import llguidance.numpy as lnp

        self.ll, self.lnp = llguidance, lnp
        self.tokenizer = llguidance.LLTokenizer(json.dumps(tok.to_hf_json()), n_vocab=tok.vocab_size,
                                                eos_token=tok.eos_id)
        self.bitmask = lnp.allocate_token_bitmask(1, tok.vocab_size)

    def compile(self, schema):
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        error = self.ll.LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error and not error.startswith("WARNING"):
            raise ValueError(error)
        return grammar

    def walk(self, compiled, ids) -> list[float]:
        matcher = self.ll.LLMatcher(self.tokenizer, compiled)
        times = []
        for i in ids:
            start = time.perf_counter()
            self.lnp.fill_next_token_bitmask(matcher, self.bitmask, 0)
            ok = matcher.consume_token(i)
            times.append(time.perf_counter() - start)
            assert ok and not matcher.is_error(), f"llguidance refused token {i}: {matcher.get_error()}"
        return times


def mask_times(tools, tok, rounds: int) -> dict:
    """Per schema and tool: compile seconds, cold and warm mean per-token microseconds (tools interleaved)."""
    out: dict = {}
    for name, (schema, instance) in SCHEMAS.items():
        ids = tok.encode(compact(instance))
        row = out[name] = {"tokens": len(ids)}
        for r in range(rounds):
            for tool in (tools if r % 2 == 0 else tools[::-1]):
                start = time.perf_counter()
                compiled = tool.compile(schema)
                compile_s = time.perf_counter() - start
                cold = tool.walk(compiled, ids)
                warm = tool.walk(compiled, ids)
                entry = row.setdefault(tool.name, {"compile_s": [], "cold_us": [], "warm_us": []})
                entry["compile_s"].append(compile_s)
                entry["cold_us"].append(1e6 * statistics.fmean(cold))
                entry["warm_us"].append(1e6 * statistics.fmean(warm))
        for tool in tools:
            row[tool.name] = {k: round(statistics.median(v), 4 if k == "compile_s" else 1)
                              for k, v in row[tool.name].items()}
    return out


def supported(tools) -> dict:
    out = {}
    for tool in tools:
        ok = []
        for schema in FEATURES:
            try:
                tool.compile(schema)
                ok.append(True)
            except Exception:
                ok.append(False)
        out[tool.name] = {"compiled": sum(ok), "of": len(FEATURES),
                          "refused": [compact(s) for s, good in zip(FEATURES, ok, strict=True) if not good]}
    return out


class XGrammarProcessor:
    """xgrammar's mask as an lmlab logits processor (one row, greedy)."""

    def __init__(self, xg: XGrammar, compiled) -> None:
        self.xg, self.matcher, self.fed = xg, xg.xgr.GrammarMatcher(compiled), 0

    def __call__(self, scores, ids, prompt_length):
        generated = ids[0, prompt_length:].tolist()
        for token in generated[self.fed:]:
            self.matcher.accept_token(token)
        self.fed = len(generated)
        self.matcher.fill_next_token_bitmask(self.xg.bitmask)
        self.xg.xgr.apply_token_bitmask_inplace(scores, self.xg.bitmask[:, :scores.shape[1]])
        return scores


class Timed:
    """A processor that adds up the seconds the wrapped one takes (the constraint's share of a step)."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, scores, ids, prompt_length):
        start = time.perf_counter()
        out = self.inner(scores, ids, prompt_length)
        self.seconds += time.perf_counter() - start
        return out


def generation(lm, tok, xg, max_new: int, count: int) -> dict:
    """SmolLM2 greedy on chat prompts: plain, lmlab-constrained, xgrammar-constrained (interleaved)."""
    import jsonschema

    from lmlab.generate.chat_template import chat_prompt
    from lmlab.generate.constrain import constraint_processor
    from lmlab.generate.engine import Engine, Request
    from lmlab.generate.settings import DecodingSettings

    engine = Engine(lm, tok)
    rows: dict = {"plain": [], "lmlab": [], "xgrammar": []}
    valid = {"lmlab": 0, "xgrammar": 0}
    for name, (schema, _) in list(SCHEMAS.items())[:count]:
        prompt = chat_prompt(tok, [{"role": "user", "content": f"Reply with a JSON {name.replace('_', ' ')} "
                                                               f"following this schema: {compact(schema)}"}])
        base = DecodingSettings(greedy=True, max_new_tokens=max_new)
        start = time.perf_counter()
        ours = Timed(constraint_processor("json_schema", schema, tok, [tok.eos_id]))
        compile_s = time.perf_counter() - start
        peer = Timed(XGrammarProcessor(xg, xg.compile(schema)))
        kinds = {"plain": base, "lmlab": base.with_(constraint=ours), "xgrammar": base.with_(processors=(peer,))}
        for kind, settings in kinds.items():
            out = engine.generate([Request(prompt, settings=settings)])[0]
            stats = out.stats.to_dict()
            rows[kind].append({"schema": name, "tokens": len(out.ids), "finish": out.finish_reason,
                               "decode_tokens_per_s": stats["decode_tokens_per_s"]})
            if kind != "plain":  # the constraint's seconds against the whole decode's, same run
                timed = ours if kind == "lmlab" else peer
                decode_s = len(out.ids) / stats["decode_tokens_per_s"]
                rows[kind][-1].update(constraint_share=timed.seconds / decode_s,
                                      constraint_us_per_token=1e6 * timed.seconds / max(1, len(out.ids)))
                if kind == "lmlab":
                    rows[kind][-1]["compile_s"] = compile_s
            if kind != "plain":
                try:
                    jsonschema.validate(json.loads(out.text), schema)
                    valid[kind] += out.finish_reason == "stop"
                    rows[kind][-1]["valid"] = out.finish_reason == "stop"
                except (ValueError, jsonschema.ValidationError):
                    rows[kind][-1]["valid"] = False
                rows[kind][-1]["text"] = out.text[:200]
    per_token = {k: statistics.median(1000.0 / r["decode_tokens_per_s"] for r in v) for k, v in rows.items()}
    share = {k: statistics.median(r["constraint_share"] for r in rows[k]) for k in ("lmlab", "xgrammar")}
    return {"rows": rows, "valid": valid, "of": count, "median_ms_per_token": per_token,
            "median_constraint_share_of_decode": share,
            "wall_overhead_lmlab": per_token["lmlab"] / per_token["plain"] - 1,
            "wall_overhead_xgrammar": per_token["xgrammar"] / per_token["plain"] - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="compile + walks per schema and tool")
    parser.add_argument("--generate", type=int, default=4, help="schemas SmolLM2 generates for (0: none)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lmlab.tokenizers import smollm2_gguf, tokenizer_from_gguf

    tok = tokenizer_from_gguf(smollm2_gguf())
    tools = [Lmlab(tok), XGrammar(tok), LLGuidance(tok)]
    load = os.getloadavg()
    masks = mask_times(tools, tok, args.rounds)
    support = supported(tools)
    summary = {}
    for tool in tools:
        cold = [masks[s][tool.name]["cold_us"] for s in SCHEMAS]
        warm = [masks[s][tool.name]["warm_us"] for s in SCHEMAS]
        summary[tool.name] = {"median_cold_us_per_token": statistics.median(cold),
                              "median_warm_us_per_token": statistics.median(warm),
                              "median_compile_s": statistics.median(masks[s][tool.name]["compile_s"] for s in SCHEMAS)}
    fastest = min(min(v["median_cold_us_per_token"], v["median_warm_us_per_token"])
                  for k, v in summary.items() if k != "lmlab")
    result = {"bench": "decoding_structured", "vocab": "SmolLM2-135M (49152 byte-level BPE tokens)",
              "cpu": platform.processor() or platform.machine(), "threads": args.threads,
              "load_before": [round(x, 2) for x in load], "masks": masks, "summary": summary,
              "lmlab_cold_vs_fastest_peer": summary["lmlab"]["median_cold_us_per_token"] / fastest,
              "lmlab_warm_vs_fastest_peer": summary["lmlab"]["median_warm_us_per_token"] / fastest,
              "schemas_supported": support}
    if args.generate:
        from lmlab.models import load_model

        lm, chat_tok = load_model("smollm2-135m-instruct")  # the same vocabulary, with its chat template
        result["generation"] = generation(lm, chat_tok, tools[1], args.max_new_tokens, args.generate)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    for name, row in masks.items():
        print(name, {k: v for k, v in row.items()})
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
