"""lmlab.quant: quantizers (absmax / zero-point int8 and int4, NF4, HQQ, GPTQ, AWQ, SmoothQuant W8A8)
that turn a float model into one whose linear layers stay quantized at run time
(``lmlab.models.quantized.QuantLinear``), and the quality/speed report of a quantized model."""

from .methods import METHODS, quantize_model

__all__ = ["METHODS", "quantize_model"]
