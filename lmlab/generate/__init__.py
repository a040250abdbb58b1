"""lmlab.generate: decoding from any protocol model — search strategies × logits processors."""

from .beam import beam_search, diverse_beam_search, stochastic_beam_search
from .processors import (
    BanTokens,
    Epsilon,
    Eta,
    FrequencyPresencePenalty,
    LogitBias,
    MinP,
    NoRepeatNgram,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
    standard_chain,
)
from .sampling import Generation, ancestral_sample, best_of_n, sample

__all__ = [
    "BanTokens", "Epsilon", "Eta", "FrequencyPresencePenalty", "Generation", "LogitBias", "MinP",
    "NoRepeatNgram", "RepetitionPenalty", "Temperature", "TopK", "TopP", "Typical", "ancestral_sample",
    "beam_search", "best_of_n", "diverse_beam_search", "sample", "standard_chain", "stochastic_beam_search",
]
