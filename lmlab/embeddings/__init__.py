"""lmlab.embeddings: word2vec (skip-gram, CBOW; negative sampling, hierarchical softmax) and word vectors."""

from .vectors import WordVectors, load_word2vec
from .vocab import Vocab, build_vocab, encode, huffman_codes
from .word2vec import Word2Vec, Word2VecConfig, train_word2vec

__all__ = ["Vocab", "Word2Vec", "Word2VecConfig", "WordVectors", "build_vocab", "encode",
           "huffman_codes", "load_word2vec", "train_word2vec"]
