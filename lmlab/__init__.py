"""lmlab — a language-model laboratory: tokenizers, language models, decoding, evaluation, serving.

Layers (lower never import higher; the README's "Layout" and tests/test_repo.py say the same):
core < tokenizers, data, analysis, formats < lm, ngram, models, embeddings, kvcache, wordalign <
train, peft, align < generate, quant < retrieval, eval, classify, agents, tagging, interp, instruct < cli, serve.
"""

__version__ = "0.1.0"


def embed(texts, **options):
    """Sentence embeddings [N, D] of ``texts``: all-MiniLM-L6-v2, mean-pooled and normalised
    (options: model, pooling, normalize, batch_size, max_length; see ``lmlab.embeddings.embed``)."""
    from .embeddings.sentence import embed as _embed

    return _embed(texts, **options)
