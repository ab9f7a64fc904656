"""Response bodies and SSE chunks shaped exactly like OpenAI's."""

from __future__ import annotations

import json
import time
import uuid

from draftwise.stats import Stats

DONE = "data: [DONE]\n\n"


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def usage(st: Stats) -> dict:
    return {"prompt_tokens": st.n_prompt, "completion_tokens": st.n_generated,
            "total_tokens": st.n_prompt + st.n_generated}


def speculative(st: Stats) -> dict:
    """Our extra object: what the draft did for this response. exact: False under a lossy
    acceptance mode; n_lenient: accepted tokens exact verification would have rejected."""
    return {"drafted": st.n_drafted, "accepted": st.n_accepted,
            "acceptance_rate": round(st.alpha, 4), "tokens_per_round": round(st.tau, 4),
            "k_used": round(sum(st.k_used) / len(st.k_used), 4) if st.k_used else 0.0,
            "accept": st.accept, "exact": st.exact, "n_lenient": st.n_lenient}


class Shape:
    """Builds the bodies of one response (completion or chat) with a shared id and timestamp."""

    def __init__(self, model: str, chat: bool):
        self.model, self.chat = model, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def full(self, text: str, st: Stats) -> dict:
        """The non-streaming response."""
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": st.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": st.finish_reason}
        return {**self._head("chat.completion" if self.chat else "text_completion"),
                "choices": [choice], "usage": usage(st), "speculative": speculative(st)}

    def chunk(self, text: str | None = None, *, role: bool = False,
              finish: str | None = None) -> dict:
        """One streamed chunk: the chat role opener, a text delta, or the finish_reason."""
        if self.chat:
            delta: dict = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, st: Stats) -> dict:
        """The extra last chunk of stream_options.include_usage: no choices, only usage."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage(st), "speculative": speculative(st)}
