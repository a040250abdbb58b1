"""lmlab.retrieval: sparse (BM25, TF-IDF) and dense retrieval, fusion, chunking, IR metrics, RAG and
kNN-LM (``lmlab.retrieval.knnlm``, ``lmlab.retrieval.rerank``: imported on their own, they need torch)."""

from .chunking import Chunk, chunk_by_sentences, chunk_by_tokens
from .dense import DenseRetriever, ExactIndex, HNSWIndex, encode
from .fusion import HybridRetriever, interpolate, reciprocal_rank_fusion
from .index import InvertedIndex
from .metrics import evaluate_run
from .sparse import SparseRetriever

__all__ = ["Chunk", "DenseRetriever", "ExactIndex", "HNSWIndex", "HybridRetriever", "InvertedIndex",
           "SparseRetriever", "chunk_by_sentences", "chunk_by_tokens", "encode", "evaluate_run", "interpolate",
           "reciprocal_rank_fusion"]
