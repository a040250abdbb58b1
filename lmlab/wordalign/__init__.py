"""Statistical word alignment: IBM Models 1 and 2 trained by EM, Viterbi alignments, and the
symmetrisation heuristics that combine the two directions (intersection, union, grow-diag-final)."""

from .ibm import IBMModel, index_links, train_ibm1, train_ibm2
from .symmetrize import SYMMETRIZATIONS, symmetrize

__all__ = ["IBMModel", "SYMMETRIZATIONS", "index_links", "symmetrize", "train_ibm1", "train_ibm2"]
