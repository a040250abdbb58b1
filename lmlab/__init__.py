"""lmlab — a language-model laboratory: tokenizers, language models, decoding, evaluation, serving.

Layers (lower never import higher): core → tokenizers/data → lm/ngram/models → train/peft/align
→ generate/kvcache/quant → retrieval/eval/classify/agents → cli/serve.
"""

__version__ = "0.1.0"
