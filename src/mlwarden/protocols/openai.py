"""OpenAI-compatible chat completions, completions and embeddings, as Records.

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

Refusals: the output `refusal` is true when the first choice refused, as OpenAI's API
says it: the message (or, streamed, a delta) carries a non-null `refusal` (structured
outputs), or `finish_reason` is `content_filter` (the provider's filter withheld or cut
the completion); false otherwise. Only that boolean is kept, never the refusal's text.

A request with `input` and neither `messages` nor `prompt` is an embeddings request
(`POST /v1/embeddings`): one record per input (`input` a string, strings, token ids or
lists of token ids), with features `model` and `input_chars` (left out for token ids),
and as output vector the input's embedding, `data[i].embedding` of the entry whose
`index` is i (a list of floats, or with `encoding_format: base64` the base64 of
little-endian float32s, decoded). The vector is named by the spec's embedding feature
when it declares exactly one (`features[].type: embedding`), else `embedding`. `usage`
(`prompt_tokens`, `total_tokens`) as for completions: only when there is one input.

Privacy: no text leaves this adapter: not a prompt, message, completion, refusal or
embeddings input, only the counts and settings above (docs/privacy.md). An embedding does
leave it (it is what embedding drift is measured on); `spec.capture.redact` with
`action: drop` on its name keeps it in the pod.

`Record.request_id` is the response's `id` (`chatcmpl-...`, `cmpl-...`).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from mlwarden.protocols.json_paths import is_scalar, load_request
from mlwarden.records import ProtocolError, Record, Value
from mlwarden.records import json_kind as kind_of
from mlwarden.spec import ObservedModelSpec

_USAGE: Final = ("prompt_tokens", "completion_tokens", "total_tokens")


_EMBEDDING_USAGE: Final = ("prompt_tokens", "total_tokens")
REFUSAL_FINISH: Final = "content_filter"


@dataclass(slots=True)
class _Choice:
    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    refused: bool = False


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
    if "input" in body and "messages" not in body and "prompt" not in body:
        return _embeddings(body, response, spec, common)
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
            outputs["refusal"] = choice.refused or choice.finish_reason == REFUSAL_FINISH
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
        if _refused(raw):
            choice.refused = True
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


def _refused(choice: dict[str, Any]) -> bool:
    """The message (or delta) carries a refusal: a non-null, non-empty `refusal`."""
    for key in ("message", "delta"):
        inner = choice.get(key)
        if isinstance(inner, dict):
            refusal = inner.get("refusal")
            return isinstance(refusal, str) and refusal != ""
    return False


# --------------------------------------------------------------------------- embeddings


def _embeddings(
    body: dict[str, Any],
    response: bytes,
    spec: ObservedModelSpec | None,
    common: dict[str, Value],
) -> list[Record]:
    """One record per input of an embeddings request, with its vector from the response."""
    inputs = _inputs(body["input"])
    name = _vector_name(spec)
    vectors: dict[int, list[float]] = {}
    usage: dict[str, Value] = {}
    reply: Any = None
    if response.lstrip()[:1] == b"{":
        try:
            reply = json.loads(response.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            reply = None  # an error body, or cut by the capture size limit: no vectors
    request_id: str | None = None
    if isinstance(reply, dict):
        if isinstance(reply.get("id"), str):
            request_id = reply["id"]
        raw_usage = reply.get("usage")
        if isinstance(raw_usage, dict):
            usage = {
                k: raw_usage[k]
                for k in _EMBEDDING_USAGE
                if k in raw_usage and is_scalar(raw_usage[k])
            }
        data = reply.get("data")
        if isinstance(data, list):
            for position, item in enumerate(data):
                if not isinstance(item, dict):
                    continue
                index = item.get("index")
                if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                    index = position
                vector = decode_embedding(item.get("embedding"))
                if vector is not None:
                    vectors[index] = vector
    records = []
    for i, extra in enumerate(inputs):
        outputs: dict[str, Value] = dict(usage) if len(inputs) == 1 else {}
        vector = vectors.get(i)
        records.append(
            Record(
                features=common | extra,
                outputs=outputs,
                row=i,
                request_id=request_id,
                output_vectors={name: vector} if vector is not None else {},
            )
        )
    return records


def _inputs(raw: object) -> list[dict[str, Value]]:
    """Per-input features: `input` is a string, strings, token ids, or lists of token ids."""
    if isinstance(raw, str):
        return [{"input_chars": len(raw)}]
    if isinstance(raw, list) and raw:
        if all(isinstance(p, str) for p in raw):
            return [{"input_chars": len(p)} for p in raw]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in raw):
            return [{}]  # one input given as token ids
        if all(isinstance(p, list) for p in raw):
            return [{} for _ in raw]
    raise ProtocolError(
        f"input: must be a string, a list of strings, or token ids, got {kind_of(raw)}"
    )


def _vector_name(spec: ObservedModelSpec | None) -> str:
    declared = [f.name for f in spec.features if f.type == "embedding"] if spec else []
    return declared[0] if len(declared) == 1 else "embedding"


def decode_embedding(raw: object) -> list[float] | None:
    """A vector from `data[].embedding`: a list of numbers, or base64 of float32s (LE).

    None when it is neither (an entry the response left malformed). Non-finite values are
    kept (the detector counts such a vector as a type error).
    """
    if isinstance(raw, list):
        if raw and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
            return [float(v) for v in raw]
        return None
    if isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
        if not data or len(data) % 4:
            return None
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    return None
