"""lmlab.embeddings: word vectors (word2vec: skip-gram, CBOW; negative sampling, hierarchical
softmax) and sentence embeddings from bidirectional encoders (``embed``, ``SentenceEncoder``)."""

from .sentence import SentenceEncoder, embed, sentence_encoder
from .vectors import WordVectors, load_word2vec
from .vocab import Vocab, build_vocab, encode, huffman_codes
from .word2vec import Word2Vec, Word2VecConfig, train_word2vec

__all__ = ["SentenceEncoder", "Vocab", "Word2Vec", "Word2VecConfig", "WordVectors", "build_vocab", "embed",
           "encode", "huffman_codes", "load_word2vec", "sentence_encoder", "train_word2vec"]
