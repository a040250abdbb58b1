"""lmlab.formats: readers and writers of model file formats (GGUF)."""
