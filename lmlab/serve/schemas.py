"""Request bodies of the OpenAI-compatible endpoints, validated by pydantic.

Fields follow the OpenAI API; lmlab's own decoding knobs (``top_k``, ``min_p``,
``repetition_penalty``, ``beam_size``, ``length_penalty``, and the KV-cache policy ``kv_policy`` /
``kv_budget``) are accepted as documented extensions.
Unknown fields are ignored, as OpenAI-compatible servers do. Here are the fields' types and the
server's size limits (n, stops, log-probs, beams); the values of decoding settings are checked by
``lmlab.generate.settings.DecodingSettings`` — the validator the CLI uses — and a bad one is a 400
naming the field (see ``lmlab.serve.app``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_N = 8
MAX_STOPS = 4
MAX_TOP_LOGPROBS = 20
MAX_BEAMS = 16


class StreamOptions(BaseModel):
    include_usage: bool = False


class Decoding(BaseModel):
    """The decoding fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = Field(default=1, le=MAX_N)
    stop: str | list[str] | None = Field(default=None, validate_default=True)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    # lmlab extensions
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    beam_size: int | None = Field(default=None, le=MAX_BEAMS)
    length_penalty: float = 1.0
    kv_policy: str | None = None
    kv_budget: float | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"keys are token ids, got {key!r}")
        return value

    @field_validator("beam_size")
    @classmethod
    def _beam(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("stream"):
            raise ValueError("beam_size cannot be combined with stream")
        return value


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(Decoding):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("top_logprobs")
    @classmethod
    def _top(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value


class CompletionRequest(Decoding):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    best_of: int | None = Field(default=None, le=MAX_N)

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("stream"):
            raise ValueError("best_of cannot be combined with stream")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list) -> str | list:
        if isinstance(value, list) and not value:
            raise ValueError("the prompt list is empty")
        return value


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) > 256:
            raise ValueError("at most 256 inputs per request")
        return value
