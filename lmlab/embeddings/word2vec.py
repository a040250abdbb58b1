"""word2vec (Mikolov et al., 2013): skip-gram and CBOW with negative sampling or hierarchical softmax.

The corpus is streamed twice: once to count words, once to encode it as an int32 id array
(4 bytes a word). Training then runs numba kernels (``_kernels.py``) on jobs of about
``job_words`` words from ``threads`` Python threads; the kernels release the GIL and update
the shared weights Hogwild-style, like the C tool. The learning rate decays linearly from
``alpha`` to ``min_alpha`` over all epochs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from ..core.optional import import_optional
from ..core.progress import progress
from ..core.validate import check_choice, check_number
from .vectors import WordVectors
from .vocab import Vocab, build_vocab, encode, huffman_codes

ARCHITECTURES = ("skipgram", "cbow")
LOSSES = ("ns", "hs")
CUM_TABLE_DOMAIN = 2**31 - 1


@dataclass
class Word2VecConfig:
    """Hyper-parameters; the defaults are gensim's (skip-gram here, 100 dimensions, window 5)."""

    dim: int = 100
    architecture: str = "skipgram"
    loss: str = "ns"
    negative: int = 5
    ns_exponent: float = 0.75
    window: int = 5
    sample: float = 1e-3
    min_count: int = 5
    max_vocab: int | None = None
    alpha: float = 0.025
    min_alpha: float = 0.0001
    epochs: int = 5
    threads: int = 2
    seed: int = 1
    job_words: int = 10_000

    def __post_init__(self) -> None:
        check_number("dim", self.dim, low=1, integer=True)
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_choice("loss", self.loss, LOSSES)
        check_number("negative", self.negative, low=1 if self.loss == "ns" else 0, integer=True)
        check_number("ns_exponent", self.ns_exponent)
        check_number("window", self.window, low=1, integer=True)
        check_number("sample", self.sample, low=0)
        check_number("min_count", self.min_count, low=1, integer=True)
        if self.max_vocab is not None:
            check_number("max_vocab", self.max_vocab, low=1, integer=True)
        check_number("alpha", self.alpha, low=0, low_inclusive=False)
        check_number("min_alpha", self.min_alpha, low=0, high=self.alpha)
        check_number("epochs", self.epochs, low=1, integer=True)
        check_number("threads", self.threads, low=1, integer=True)
        check_number("seed", self.seed, low=0, integer=True)
        check_number("job_words", self.job_words, low=1, integer=True)


@dataclass
class TrainStats:
    """What one training run did: words read, words kept after subsampling, seconds, words/s."""

    words: int
    kept_words: int
    seconds: float

    @property
    def words_per_s(self) -> float:
        return self.words / self.seconds if self.seconds > 0 else float("inf")


def _kernels():
    return import_optional("lmlab.embeddings._kernels", "numba", "word2vec training")


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Probability of keeping each word under frequent-word subsampling (the C tool's formula)."""
    if sample <= 0:
        return np.ones(len(counts), dtype=np.float64)
    threshold = sample * counts.sum()
    keep = (np.sqrt(counts / threshold) + 1) * threshold / counts
    return np.minimum(keep, 1.0)


def noise_table(counts: np.ndarray, exponent: float = 0.75) -> np.ndarray:
    """Cumulative table of count**exponent scaled to 2**31-1; a uniform draw below its end,
    looked up with searchsorted, gives a word from the unigram^exponent noise distribution."""
    weights = counts.astype(np.float64) ** exponent
    return np.round(np.cumsum(weights) / weights.sum() * CUM_TABLE_DOMAIN).astype(np.int64)


def huffman_arrays(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huffman points and codes padded into (V, depth) arrays, plus each path's length."""
    codes, points = huffman_codes(counts)
    depth = max(1, max(len(c) for c in codes))
    pts = np.zeros((len(counts), depth), dtype=np.int64)
    cds = np.zeros((len(counts), depth), dtype=np.float32)
    lens = np.zeros(len(counts), dtype=np.int64)
    for w, (c, p) in enumerate(zip(codes, points, strict=True)):
        lens[w] = len(c)
        pts[w, :len(p)] = p
        cds[w, :len(c)] = c
    return pts, cds, lens


class Word2Vec:
    """A word2vec model: vocabulary, input vectors (the word vectors) and output weights."""

    def __init__(self, config: Word2VecConfig, vocab: Vocab) -> None:
        self.config = config
        self.vocab = vocab
        rng = np.random.default_rng(config.seed)
        v, d = len(vocab), config.dim
        self.syn0 = ((rng.random((v, d), dtype=np.float32) - 0.5) / d).astype(np.float32)
        self.syn1neg = np.zeros((v if config.loss == "ns" else 1, d), dtype=np.float32)
        self.syn1 = np.zeros((max(v - 1, 1) if config.loss == "hs" else 1, d), dtype=np.float32)
        self.stats: TrainStats | None = None

    @property
    def wv(self) -> WordVectors:
        return WordVectors(self.vocab.words, self.syn0, counts=self.vocab.counts)

    def train(self, ids: np.ndarray, starts: np.ndarray) -> TrainStats:
        """Run all epochs over an encoded corpus (see ``vocab.encode``)."""
        k = _kernels()
        cfg = self.config
        keep = keep_probabilities(self.vocab.counts, cfg.sample)
        if cfg.loss == "hs":
            points, codes, lens = huffman_arrays(self.vocab.counts)
        else:
            points = np.zeros((len(self.vocab), 1), dtype=np.int64)
            codes = np.zeros((len(self.vocab), 1), dtype=np.float32)
            lens = np.zeros(len(self.vocab), dtype=np.int64)
        cum = noise_table(self.vocab.counts, cfg.ns_exponent)
        negative = cfg.negative if cfg.loss == "ns" else 0
        jobs = _jobs(starts, cfg.job_words)
        corpus_words = int(starts[-1])
        total = corpus_words * cfg.epochs

        def run(job: tuple[int, int, int, int]) -> int:
            epoch, j, lo, hi = job
            done = epoch * corpus_words + int(starts[lo])
            a0 = cfg.alpha - (cfg.alpha - cfg.min_alpha) * done / total
            a1 = cfg.alpha - (cfg.alpha - cfg.min_alpha) * (done + int(starts[hi] - starts[lo])) / total
            seed = (cfg.seed * 1_000_003 + epoch * 7919 + j) * 2654435761 % 2**63 + 1
            return int(k.train_job(self.syn0, self.syn1neg, self.syn1, ids, starts[lo:hi + 1], keep, cum,
                                   points, codes, lens, cfg.architecture == "skipgram", negative,
                                   cfg.window, a0, a1, seed))

        all_jobs = [(e, j, lo, hi) for e in range(cfg.epochs) for j, (lo, hi) in enumerate(jobs)]
        # compile before the clock starts (a no-op after the first call: kernels are cached)
        k.train_job(self.syn0.copy(), self.syn1neg.copy(), self.syn1.copy(), ids, starts[:1], keep, cum,
                    points, codes, lens, cfg.architecture == "skipgram", negative, cfg.window, 0.0, 0.0, 1)
        kept = 0
        t0 = time.perf_counter()
        bar = progress(desc="training word2vec", total=len(all_jobs), unit="job")
        if cfg.threads == 1:
            for job in all_jobs:
                kept += run(job)
                bar.update(1)
        else:
            with ThreadPoolExecutor(cfg.threads) as pool:
                for n in pool.map(run, all_jobs):
                    kept += n
                    bar.update(1)
        bar.close()
        self.stats = TrainStats(total, kept, time.perf_counter() - t0)
        return self.stats

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        config = {"model_type": "word2vec", **asdict(self.config)}
        return config, {"syn0": self.syn0, "syn1neg": self.syn1neg, "syn1": self.syn1}


def _jobs(starts: np.ndarray, job_words: int) -> list[tuple[int, int]]:
    """Split sentences into consecutive runs of at least ``job_words`` words (sentence indices)."""
    jobs, lo = [], 0
    n = len(starts) - 1
    while lo < n:
        hi = int(np.searchsorted(starts, starts[lo] + job_words, side="left"))
        hi = min(max(hi, lo + 1), n)
        jobs.append((lo, hi))
        lo = hi
    return jobs


def train_word2vec(corpus: Iterable[str], config: Word2VecConfig | None = None, **overrides) -> Word2Vec:
    """Count, encode and train on a re-iterable corpus of documents (e.g. ``lmlab.data`` corpora)."""
    config = config or Word2VecConfig(**overrides)
    _kernels()  # fail early, before counting, when numba is absent
    vocab = build_vocab(corpus, min_count=config.min_count, max_vocab=config.max_vocab)
    ids, starts = encode(corpus, vocab)
    model = Word2Vec(config, vocab)
    model.train(ids, starts)
    return model
