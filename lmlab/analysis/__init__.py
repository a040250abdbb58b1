"""lmlab.analysis: text analysis shared by evaluation and retrieval (stemming, stop words, tokenisation)."""
