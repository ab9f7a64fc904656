"""Request bodies of the OpenAI endpoints, validated with pydantic (errors become 400s)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from draftwise.acceptance import Acceptance, parse_accept
from draftwise.config import check_k
from draftwise.errors import DraftwiseError


def _utf8(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the text is not valid Unicode (lone surrogate escape)") from None
    return s


def _draft_k(k: int) -> int:
    try:
        return check_k(k)
    except DraftwiseError as e:
        raise ValueError(str(e)) from None


def _accept(s: str) -> Acceptance:
    try:
        return parse_accept(s)
    except DraftwiseError as e:
        raise ValueError(str(e)) from None


Text = Annotated[StrictStr, AfterValidator(_utf8)]
Number = StrictFloat | StrictInt
MAX_STOPS = 16
MAX_STOP_CHARS = 256  # the stop matcher's hold-back check is quadratic in a stop string's length
# Parameters we cannot honour: accepted only at their "off" value.
_OFF: dict[str, tuple] = {"best_of": (None, 1), "echo": (None, False), "suffix": (None, ""),
                          "logprobs": (None, False), "top_logprobs": (None, 0),
                          "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
                          "logit_bias": (None, {}), "tools": (None, []),
                          "response_format": (None, {"type": "text"})}


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class _Request(BaseModel):
    """Fields shared by both endpoints. Ours: `draft_k` (1..32), a fixed K for this request;
    `accept`, its acceptance mode (exact, or a lossy one: draftwise.acceptance)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0)
    top_p: Number | None = Field(None, gt=0, le=1)
    stop: Text | list[Text] | None = None
    seed: StrictInt | None = None
    n: StrictInt | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    draft_k: Annotated[StrictInt, AfterValidator(_draft_k)] | None = None
    accept: Annotated[StrictStr, AfterValidator(_accept)] | None = None
    user: StrictStr | None = None
    best_of: Any = None
    echo: Any = None
    suffix: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    tools: Any = None
    response_format: Any = None

    @field_validator(*_OFF)
    @classmethod
    def _unsupported(cls, v: Any, info) -> Any:
        if not any(v is None or v == off and isinstance(v, bool) == isinstance(off, bool)
                   for off in _OFF[info.field_name]):
            raise ValueError(f"{info.field_name} is not supported by this server")
        return v

    @field_validator("n")
    @classmethod
    def _one(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise ValueError("only n=1 is supported")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str] | str | None:
        if isinstance(v, list) and len(v) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        if any(len(s) > MAX_STOP_CHARS for s in ([v] if isinstance(v, str) else v or [])):
            raise ValueError(f"a stop string may have at most {MAX_STOP_CHARS} characters")
        return v

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class CompletionRequest(_Request):
    """POST /v1/completions. One prompt: text or token ids (a one-element batch is unwrapped)."""

    prompt: Text | list[StrictInt] | list[Text] | list[list[StrictInt]]
    max_tokens: StrictInt | None = Field(16, ge=1)  # OpenAI's default for completions

    @field_validator("prompt")
    @classmethod
    def _single(cls, v: Any) -> str | list[int]:
        if isinstance(v, list) and v and not isinstance(v[0], int):
            if len(v) != 1:
                raise ValueError("batched prompts are not supported; send one prompt per request")
            v = v[0]
        return v


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = Field(None, validate_default=True)
    name: StrictStr | None = None

    @field_validator("content")
    @classmethod
    def _present(cls, v: Any, info) -> Any:
        # OpenAI allows a null (or missing) content only for an assistant turn with tool calls.
        if v is None and info.data.get("role", "assistant") != "assistant":
            raise ValueError(f"a {info.data['role']} message needs content (a string or a list of "
                             "text parts); null is allowed only for assistant messages")
        return v

    def as_dict(self) -> dict:
        c = self.content
        text = "".join(p.text for p in c) if isinstance(c, list) else (c or "")
        return {"role": self.role, "content": text}


class ChatRequest(_Request):
    """POST /v1/chat/completions. max_tokens defaults to the rest of the context."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


FIELDS = frozenset(f for m in (CompletionRequest, ChatRequest, Message, TextPart, StreamOptions)
                   for f in m.model_fields)
