"""lmlab.models: model directories (save/load) and, in later layers of work, neural modules."""

from .directory import MODEL_TYPES, NAMED_MODELS, load_model, read_model_dir, save_model_dir

__all__ = ["MODEL_TYPES", "NAMED_MODELS", "load_model", "read_model_dir", "save_model_dir"]
