"""OpenAI-compatible chat completions and completions, plain or streamed, as Records.

A request with `messages` is a chat completion (`POST /v1/chat/completions`);
one with `prompt` is a completion (`POST /v1/completions`). A chat request is
one record; a completion request is one record per prompt when `prompt` is a
list of strings (or of token-id lists), else one.

Features: `model`; `messages`, the number of messages (chat only);
`prompt_chars`, the characters of every message's text (string content, or the
`text` of each part when content is a list of parts) or of the prompt, left out
for prompts given as token ids; `max_tokens` (from `max_tokens`, else
`max_completion_tokens`) and `temperature` when the request sets them.

Outputs: `completion_chars` and `finish_reason` of the prompt's first choice
(with `n` > 1 the choices of prompt p have indices p*n .. p*n+n-1; the others
are not recorded), and `prompt_tokens`, `completion_tokens`, `total_tokens`
from `usage`. Usage counts the whole request, so a request with several prompts
leaves them out rather than attribute the total to each.

A streamed response (server-sent events, `data: {chunk}` lines, ending with
`data: [DONE]`) is folded as a client would: the `delta.content` (chat) or
`text` (completions) of each choice concatenated, the last non-null
`finish_reason` kept, `usage` taken from the chunk that carries it
(`stream_options.include_usage`). A truncated stream yields what was seen; a
choice that never finished has `finish_reason` None.

`Record.request_id` is the response's `id` (`chatcmpl-...`, `cmpl-...`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from mlwarden.protocols.json_paths import is_scalar, load_request
from mlwarden.records import ProtocolError, Record, Value
from mlwarden.records import json_kind as kind_of
from mlwarden.spec import ObservedModelSpec

_USAGE: Final = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(slots=True)
class _Choice:
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass(slots=True)
class _Completion:
    """What a response said, plain or streamed."""

    id: str | None = None
    choices: dict[int, _Choice] = field(default_factory=dict)
    usage: dict[str, Value] = field(default_factory=dict)


def parse(request: bytes, response: bytes, spec: ObservedModelSpec | None) -> list[Record]:
    """One Record per chat request, or per prompt of a completion request."""
    body = load_request(request)
    if not isinstance(body, dict):
        raise ProtocolError(f"request body must be a JSON object, got {kind_of(body)}")
    common: dict[str, Value] = {}
    if isinstance(body.get("model"), str):
        common["model"] = body["model"]
    prompts: list[dict[str, Value]]
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise ProtocolError(f"messages: must be a list of messages, got {kind_of(messages)}")
        common["messages"] = len(messages)
        common["prompt_chars"] = _messages_chars(messages)
        prompts = [{}]
    elif "prompt" in body:
        prompts = _prompts(body["prompt"])
    else:
        raise ProtocolError(
            "messages: required field is missing (chat completions; completions send prompt)"
        )
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    if _is_number(max_tokens):
        common["max_tokens"] = max_tokens
    if _is_number(body.get("temperature")):
        common["temperature"] = body["temperature"]

    n = body.get("n")
    per_prompt = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    completion = _read_response(response)
    first: dict[int, _Choice] = {}
    # Choices are ordered by prompt, then by sample: the lowest index of a prompt's
    # group is its first choice, whatever order the chunks arrived in.
    for index in sorted(completion.choices):
        first.setdefault(index // per_prompt, completion.choices[index])
    records = []
    for p, extra in enumerate(prompts):
        outputs: dict[str, Value] = {}
        choice = first.get(p)
        if choice is not None:
            outputs["completion_chars"] = sum(len(s) for s in choice.parts)
            outputs["finish_reason"] = choice.finish_reason
        if len(prompts) == 1:
            outputs.update(completion.usage)
        records.append(
            Record(features=common | extra, outputs=outputs, row=p, request_id=completion.id)
        )
    return records


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"])
        return total
    # null content (an assistant turn that only calls tools) has no text.
    return 0


def _messages_chars(messages: list[Any]) -> int:
    total = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ProtocolError(f"messages[{i}]: must be an object, got {kind_of(message)}")
        total += _text_chars(message.get("content"))
    return total


def _prompts(prompt: object) -> list[dict[str, Value]]:
    """Per-prompt features: `prompt` is a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        return [{"prompt_chars": len(prompt)}]
    if prompt is None:
        return [{}]
    if isinstance(prompt, list):
        if all(isinstance(p, str) for p in prompt):
            return [{"prompt_chars": len(p)} for p in prompt]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [{}]  # one prompt given as token ids: no characters to count
        if all(isinstance(p, list) for p in prompt):
            return [{} for _ in prompt]
    raise ProtocolError(
        f"prompt: must be a string, a list of strings, or token ids, got {kind_of(prompt)}"
    )


def _read_response(response: bytes) -> _Completion:
    completion = _Completion()
    head = response.lstrip()[:1]
    if head == b"{":
        try:
            chunk = json.loads(response.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            return completion
        _apply(completion, chunk)
        return completion
    if head:
        for chunk in _events(response.decode("utf-8", errors="replace")):
            _apply(completion, chunk)
    return completion


def _events(text: str) -> list[Any]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`."""
    chunks: list[Any] = []
    data: list[str] = []
    # SSE lines end with \r\n, \n or \r; str.splitlines would also split on
    # characters such as U+2028 that may appear raw inside a JSON string.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines.append("")  # a truncated stream's last event has no blank line after it
    for line in lines:
        if line:
            if line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
            # event:, id:, retry: and ":" comments (keep-alives) carry no completion data
            continue
        if not data:
            continue
        payload = "\n".join(data)
        data = []
        if payload.strip() == "[DONE]":
            break
        try:
            chunks.append(json.loads(payload))
        except (ValueError, RecursionError):
            continue  # a chunk cut off by the capture size limit
    return chunks


def _apply(completion: _Completion, chunk: object) -> None:
    """Fold one response object (a whole completion or a stream chunk) into `completion`."""
    if not isinstance(chunk, dict):
        return
    if completion.id is None and isinstance(chunk.get("id"), str):
        completion.id = chunk["id"]
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        completion.usage = {k: usage[k] for k in _USAGE if k in usage and is_scalar(usage[k])}
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return
    for position, raw in enumerate(choices):
        if not isinstance(raw, dict):
            continue
        index = raw.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            index = position
        choice = completion.choices.setdefault(index, _Choice())
        text = _choice_text(raw)
        if text:
            choice.parts.append(text)
        if isinstance(raw.get("finish_reason"), str):
            choice.finish_reason = raw["finish_reason"]


def _choice_text(choice: dict[str, Any]) -> str | None:
    # message.content (chat), delta.content (chat chunk), text (completions, plain or chunk)
    for key in ("message", "delta"):
        inner = choice.get(key)
        if isinstance(inner, dict):
            content = inner.get("content")
            return content if isinstance(content, str) else None
    text = choice.get("text")
    return text if isinstance(text, str) else None
