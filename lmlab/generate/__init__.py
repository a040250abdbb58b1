"""lmlab.generate: decoding from any protocol model."""

from .sampling import Generation, ancestral_sample

__all__ = ["Generation", "ancestral_sample"]
