"""OpenAI request bodies (pydantic). Bounds live here so the OpenAPI document carries them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TokenId = Annotated[int, Field(ge=0)]
# int64 range: what OpenAI documents and what torch.Generator.manual_seed accepts.
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Stop = str | list[str] | None


class _Body(BaseModel):
    # Unknown fields are refused (400) rather than silently ignored: a typo like
    # "max_token" would otherwise change the result without telling anyone.
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = Field(default=None, description="Served model id (GET /v1/models); omitted means the served one.")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1, description="0 or -1 disables.")
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: Stop = None
    stop_token_ids: list[TokenId] | None = None
    seed: Seed | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True


class CompletionRequest(_Sampling):
    prompt: Annotated[
        str | list[str] | list[TokenId] | list[list[TokenId]],
        Field(description="Text, a batch of texts, token ids, or a batch of token-id lists."),
    ]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    add_generation_prompt: bool = True
