"""``lmlab quantize``: quantize a model by one method, save it as a model directory, and report what it cost."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_common

    p = sub.add_parser("quantize", help="quantize a model (int8/int4/NF4/HQQ/GPTQ/AWQ/SmoothQuant or a GGUF's "
                                        "own blocks) into a model directory, with a quality and speed report")
    p.add_argument("--model", required=True, help="a model directory or a built-in model name")
    p.add_argument("--out", required=True, help="directory to write the quantized model to")
    p.add_argument("--group-size", type=int, default=None, help="values per scale (default: the method's)")
    p.add_argument("--no-head", action="store_true", help="keep the output projection in float")
    p.add_argument("--calibration", default=None,
                   help="calibration text for gptq/awq/smoothquant: a file or NAME:SPLIT (default wikitext-2:train)")
    p.add_argument("--calibration-sequences", type=int, default=None, help="default 32")
    p.add_argument("--calibration-length", type=int, default=None, help="tokens per sequence (default 256)")
    p.add_argument("--act-order", action="store_true", help="GPTQ: quantize columns by decreasing Hessian diagonal")
    p.add_argument("--damp", type=float, default=None,
                   help="GPTQ: damping, a fraction of the mean Hessian diagonal (default 0.01)")
    p.add_argument("--alpha", type=float, default=None, help="SmoothQuant: migration strength (default 0.5)")
    p.add_argument("--report", action="store_true",
                   help="measure bits/weight, size, perplexity, KL and top-1 agreement vs float, speed, memory")
    p.add_argument("--eval", default=None,
                   help="text for --report's quality (a file or NAME:SPLIT; default wikitext-2:test)")
    p.add_argument("--eval-tokens", type=int, default=None, help="score only the first N tokens (default: all)")
    p.add_argument("--window", type=int, default=None, help="--report's sliding window (tokens, default 512)")
    p.add_argument("--stride", type=int, default=None, help="--report's window stride (tokens, default 256)")
    p.add_argument("--new-tokens", type=int, default=None, help="--report's decode length (default 128)")
    add_common(p)
    p.set_defaults(func=run)


def complete(p: argparse.ArgumentParser) -> None:
    """--method and --head-method, whose choices come from ``lmlab.quant`` (it imports torch)."""
    from ..quant import METHODS

    p.add_argument("--method", required=True, choices=[*METHODS, "gguf"],
                   help="quantization method; gguf keeps a GGUF model's own block codes (Q4_1, Q8_0, ...)")
    p.add_argument("--head-method", default=None, choices=[m for m, spec in METHODS.items() if not spec.calibrated],
                   help="quantize the output projection by this calibration-free method instead (e.g. int8-group: "
                        "llama.cpp's Q4_0/Q4_1 files keep the tied head in Q8_0)")


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.validate import check_number
    from ..data import open_corpus
    from ..models import load_model, save_model_dir
    from ..quant import METHODS, quantize_model
    from ..quant.calibration import calibration_ids
    from ..quant.report import compare_models, decode_speed, directory_mb, text_tokens, weight_bits
    from .common import check_outputs, emit, refuse_orphans, status

    check_outputs(args, dirs=("out",))
    refuse_orphans(args, {"report": ("eval", "eval_tokens", "window", "stride", "new_tokens")})
    calibrated = args.method != "gguf" and METHODS[args.method].calibrated
    for flag, value, applies, methods in (
            ("--calibration", args.calibration, calibrated, "gptq, awq and smoothquant"),
            ("--calibration-sequences", args.calibration_sequences, calibrated, "gptq, awq and smoothquant"),
            ("--calibration-length", args.calibration_length, calibrated, "gptq, awq and smoothquant"),
            ("--damp", args.damp, args.method == "gptq", "gptq"), ("--act-order", args.act_order or None,
                                                                   args.method == "gptq", "gptq"),
            ("--alpha", args.alpha, args.method == "smoothquant", "smoothquant")):
        if value is not None and not applies:
            raise ConfigError(f"{flag} applies to {methods}, not to --method {args.method}", f"leave {flag} out")
    sequences = check_number("--calibration-sequences", args.calibration_sequences or 32, low=1, integer=True)
    length = check_number("--calibration-length", args.calibration_length or 256, low=2, integer=True)
    if args.method == "gguf":
        if args.group_size or args.no_head:
            raise ConfigError("--method gguf keeps the file's own blocks; --group-size/--no-head do not apply",
                              "leave them out")
        lm, tokenizer = load_model(args.model, quantized=True)
    else:
        lm, tokenizer = load_model(args.model)
        calibration = None
        if calibrated:
            text = args.calibration or "wikitext-2:train"
            status(args, f"calibrating on {sequences} × {length} tokens of {text}")
            calibration = calibration_ids(tokenizer, open_corpus(text), sequences, length)
        quantize_model(lm, args.method, group_size=args.group_size, calibration=calibration, act_order=args.act_order,
                       damp=0.01 if args.damp is None else args.damp, alpha=0.5 if args.alpha is None else args.alpha,
                       head=not args.no_head, head_method=args.head_method)
    save_model_dir(args.out, *lm.to_state(), tokenizer=tokenizer)
    result = {"model": args.model, "method": args.method, "out": args.out, **weight_bits(lm),
              "size_mb": directory_mb(args.out)}
    if args.report:
        from ..generate.chat_template import chat_prompt

        quantized, _ = load_model(args.out)  # what a user gets back: the saved codes
        reference, _ = load_model(args.model)
        text = args.eval or "wikitext-2:test"
        ids = text_tokens(tokenizer, open_corpus(text), args.eval_tokens)
        status(args, f"scoring {len(ids)} tokens of {text} with both models")
        result.update(compare_models(reference, quantized, ids, window=args.window or 512, stride=args.stride or 256))
        del reference
        prompt = (chat_prompt(tokenizer, [{"role": "user", "content": "Explain why the sky is blue."}])
                  if getattr(tokenizer, "chat_template", None) else ids[:32])
        result.update(decode_speed(quantized, tokenizer, prompt, 128 if args.new_tokens is None else args.new_tokens))
    human = "\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.items())
    emit(args, result, human)
    return 0
