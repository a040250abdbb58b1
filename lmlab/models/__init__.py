"""lmlab.models: model directories (save/load) and the neural language models.

The PyTorch modules are imported lazily by their own modules (``lmlab.models.transformer``,
``.recurrent``, ``.feedforward``, ``.config``) so that ``import lmlab`` stays fast.
"""

from .directory import MODEL_TYPES, NAMED_MODELS, load_model, read_model_dir, save_model_dir

__all__ = ["MODEL_TYPES", "NAMED_MODELS", "load_model", "read_model_dir", "save_model_dir"]
