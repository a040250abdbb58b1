"""lmlab.quant: weight-only quantization of trained models for faster CPU decoding."""

from .int8 import SCHEMES, Int8Linear, dequantize_int8, quantize_int8, quantize_model

__all__ = ["SCHEMES", "Int8Linear", "dequantize_int8", "quantize_int8", "quantize_model"]
