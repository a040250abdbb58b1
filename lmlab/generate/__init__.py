"""lmlab.generate: decoding from any protocol model — search strategies × logits processors × the KV
cache, in one loop (``lmlab.generate.loop``) that the engine, the server and every caller drive."""

from .beam import beam_search, diverse_beam_search, stochastic_beam_search
from .engine import Engine
from .loop import DecodeLoop, Request
from .output import Completion, Event, StopStrings
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
from .sampling import ancestral_sample, best_of_n, sample
from .settings import DecodingSettings, SettingError

__all__ = [
    "BanTokens", "Completion", "DecodeLoop", "DecodingSettings", "Engine", "Epsilon", "Eta", "Event",
    "FrequencyPresencePenalty", "LogitBias", "MinP", "NoRepeatNgram", "Request", "RepetitionPenalty",
    "SettingError", "StopStrings", "Temperature", "TopK", "TopP", "Typical", "ancestral_sample", "beam_search",
    "best_of_n", "diverse_beam_search", "sample", "standard_chain", "stochastic_beam_search",
]
