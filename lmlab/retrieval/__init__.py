"""lmlab.retrieval: sparse (BM25, TF-IDF) and dense retrieval, fusion, chunking and IR metrics."""

from .index import InvertedIndex
from .sparse import SparseRetriever

__all__ = ["InvertedIndex", "SparseRetriever"]
