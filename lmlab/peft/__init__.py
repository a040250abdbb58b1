"""lmlab.peft: parameter-efficient fine-tuning methods as wrappers over any torch module.

Each method is a config dataclass and an ``apply_*`` function that freezes the base, wraps the
targeted sub-modules in place and records the base's fingerprint; ``save_adapter`` /
``load_adapter`` move only the adapter, ``merge`` / ``unmerge`` fold it into the weights.
"""

from .adapters import AdapterConfig, BottleneckAdapter, apply_adapters
from .fusion import FusionConfig, apply_fusion
from .ia3 import IA3Config, IA3Linear, apply_ia3
from .lora import LoraConfig, LoraLinear, apply_lora
from .memory import DecoderShape, training_memory
from .merging import merge, merge_and_unload, unmerge
from .nf4 import dequantize_nf4, nf4_code_book, nf4_storage_bytes, quantize_nf4
from .prefix import PrefixConfig, apply_prefix
from .prompt import PromptConfig, apply_prompt, extend_labels, extend_mask, strip_prompt
from .qlora import NF4Linear, QLoraConfig, apply_qlora
from .saving import adapter_state_dict, load_adapter, read_adapter, save_adapter
from .selective import BitFitConfig, FullConfig, apply_bitfit, apply_full
from .switch import SWITCHABLE_METHODS, adapters_disabled, can_disable
from .targets import block_linear_names, cast_frozen_linears, find_modules, parameter_report
from .task_vectors import add_task_vector, combine, lora_task_vector, negate, task_vector

__all__ = [
    "SWITCHABLE_METHODS", "AdapterConfig", "BitFitConfig", "DecoderShape", "BottleneckAdapter", "FullConfig", "FusionConfig",
    "IA3Config", "IA3Linear", "LoraConfig", "LoraLinear", "NF4Linear", "PrefixConfig",
    "PromptConfig", "QLoraConfig", "adapter_state_dict", "adapters_disabled", "add_task_vector", "apply_adapters",
    "apply_bitfit", "apply_full", "apply_fusion", "apply_ia3", "apply_lora", "apply_prefix",
    "apply_prompt", "apply_qlora", "block_linear_names", "can_disable", "cast_frozen_linears", "combine", "dequantize_nf4", "extend_labels", "extend_mask",
    "find_modules", "load_adapter", "lora_task_vector", "merge", "merge_and_unload", "negate",
    "nf4_code_book", "nf4_storage_bytes", "parameter_report", "quantize_nf4", "read_adapter",
    "save_adapter", "strip_prompt", "task_vector", "training_memory", "unmerge",
]
