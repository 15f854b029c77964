"""OpenAI-compatible adapter, on payloads from the OpenAI API reference (plain and streamed)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mlwarden.protocols import openai
from mlwarden.records import ProtocolError, Record

Body = Callable[[Any], bytes]

CHAT_REQUEST = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
}
CHAT_RESPONSE = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "\n\nHello there, how may I assist you today?",
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 12,
        "total_tokens": 21,
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}
HELLO = "\n\nHello there, how may I assist you today?"
PROMPT_CHARS = len("You are a helpful assistant.") + len("Hello!")


def _chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": choices,
        **extra,
    }


def _delta(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _sse(chunks: list[dict[str, Any]], *, done: bool = True, newline: str = "\n") -> bytes:
    events = [f"data: {json.dumps(c)}" for c in chunks] + (["data: [DONE]"] if done else [])
    return "".join(e + newline + newline for e in events).encode()


STREAM = [
    _chunk([_delta({"role": "assistant", "content": ""})], usage=None),
    _chunk([_delta({"content": "Hello"})], usage=None),
    _chunk([_delta({"content": " there"})], usage=None),
    _chunk([_delta({"content": "!"})], usage=None),
    _chunk([_delta({}, "stop")], usage=None),
    # stream_options.include_usage: a last chunk with no choices and the usage.
    _chunk([], usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}),
]


def test_chat_completion(body: Body) -> None:
    records = openai.parse(body(CHAT_REQUEST), body(CHAT_RESPONSE), None)

    assert records == [
        Record(
            features={"model": "gpt-4o", "messages": 2, "prompt_chars": PROMPT_CHARS},
            outputs={
                "completion_chars": len(HELLO),
                "finish_reason": "stop",
                "refusal": False,
                "prompt_tokens": 9,
                "completion_tokens": 12,
                "total_tokens": 21,
            },
            row=0,
            request_id="chatcmpl-123",
        )
    ]


def test_chat_request_options_and_content_parts(body: Body) -> None:
    request = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://upload.wikimedia.org/boardwalk.jpg"},
                    },
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": []},
        ],
        "max_tokens": 300,
        "temperature": 0.2,
    }

    (record,) = openai.parse(body(request), b"", None)

    assert record.features == {
        "model": "gpt-4o",
        "messages": 2,
        "prompt_chars": len("What's in this image?"),
        "max_tokens": 300,
        "temperature": 0.2,
    }
    assert record.outputs == {}


def test_max_completion_tokens_counts_as_max_tokens(body: Body) -> None:
    request = dict(CHAT_REQUEST, max_completion_tokens=64)

    (record,) = openai.parse(body(request), b"", None)

    assert record.features["max_tokens"] == 64


def test_streamed_chat_completion_with_usage(body: Body) -> None:
    (record,) = openai.parse(body(dict(CHAT_REQUEST, stream=True)), _sse(STREAM), None)

    assert record.outputs == {
        "completion_chars": len("Hello there!"),
        "finish_reason": "stop",
        "refusal": False,
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
    }
    assert record.request_id == "chatcmpl-123"


def test_stream_with_crlf_and_keepalive_comments(body: Body) -> None:
    stream = b": keep-alive\r\n\r\n" + _sse(STREAM, newline="\r\n")

    (record,) = openai.parse(body(CHAT_REQUEST), stream, None)

    assert record.outputs["completion_chars"] == len("Hello there!")


def test_truncated_stream_yields_what_was_seen(body: Body) -> None:
    cut = _sse(STREAM[:3], done=False) + b'data: {"id": "chatcmpl-123", "choi'

    (record,) = openai.parse(body(CHAT_REQUEST), cut, None)

    assert record.outputs == {
        "completion_chars": len("Hello there"),
        "finish_reason": None,
        "refusal": False,
    }


def test_completion(body: Body) -> None:
    request = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Say this is a test",
        "max_tokens": 7,
        "temperature": 0,
    }
    response = {
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": 1589478378,
        "model": "gpt-3.5-turbo-instruct",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [
            {
                "text": "\n\nThis is indeed a test",
                "index": 0,
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }

    (record,) = openai.parse(body(request), body(response), None)

    assert record.features == {
        "model": "gpt-3.5-turbo-instruct",
        "max_tokens": 7,
        "temperature": 0,
        "prompt_chars": len("Say this is a test"),
    }
    assert record.outputs == {
        "completion_chars": len("\n\nThis is indeed a test"),
        "finish_reason": "length",
        "refusal": False,
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "total_tokens": 12,
    }
    assert record.request_id == "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7"


def test_streamed_completion(body: Body) -> None:
    def chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe",
            "object": "text_completion",
            "created": 1690759702,
            "choices": [
                {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
            "model": "gpt-3.5-turbo-instruct",
            "system_fingerprint": "fp_44709d6fcb",
        }

    stream = _sse([chunk("This", None), chunk(" is", None), chunk(" a test", "stop")])
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "stream": True}

    (record,) = openai.parse(body(request), stream, None)

    assert record.outputs == {
        "completion_chars": len("This is a test"),
        "finish_reason": "stop",
        "refusal": False,
    }
    assert record.request_id == "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe"


def test_prompt_list_gives_one_record_per_prompt_matched_by_index(body: Body) -> None:
    request = {"model": "davinci-002", "prompt": ["Once upon", "In a galaxy far"], "n": 2}
    response = {
        "id": "cmpl-abc",
        "object": "text_completion",
        # Out of order on purpose: index, not position, says which prompt a choice answers.
        "choices": [
            {"text": "far away", "index": 2, "logprobs": None, "finish_reason": "stop"},
            {"text": " a time", "index": 0, "logprobs": None, "finish_reason": "stop"},
            {"text": " a midnight", "index": 1, "logprobs": None, "finish_reason": "length"},
            {"text": ", far away", "index": 3, "logprobs": None, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20},
    }

    records = openai.parse(body(request), body(response), None)

    assert [(r.row, r.features["prompt_chars"]) for r in records] == [(0, 9), (1, 15)]
    # Usage counts the whole request: it is not attributed to each prompt.
    assert [r.outputs for r in records] == [
        {"completion_chars": len(" a time"), "finish_reason": "stop", "refusal": False},
        {"completion_chars": len("far away"), "finish_reason": "stop", "refusal": False},
    ]


def test_token_id_prompts(body: Body) -> None:
    single = openai.parse(body({"model": "m", "prompt": [1212, 318, 257]}), b"", None)
    batch = openai.parse(body({"model": "m", "prompt": [[1212, 318], [40, 716]]}), b"", None)

    assert [r.features for r in single] == [{"model": "m"}]
    assert [r.features for r in batch] == [{"model": "m"}, {"model": "m"}]


def test_error_response_gives_no_outputs(body: Body) -> None:
    response = {
        "error": {
            "message": "The model `gpt-5o` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }

    (record,) = openai.parse(body(CHAT_REQUEST), body(response), None)

    assert record.outputs == {} and record.request_id is None


@pytest.mark.parametrize(
    ("request_body", "reason"),
    [
        (b"\xff", "not valid UTF-8"),
        (b'{"model": "gpt-4o", "messages": [', "not JSON"),
        (b'["Hello!"]', "must be a JSON object, got list"),
        (b'{"model": "gpt-4o"}', "messages: required field is missing"),
        (b'{"messages": "Hello!"}', "messages: must be a list of messages, got string"),
        (b'{"messages": ["Hello!"]}', r"messages\[0\]: must be an object, got string"),
        (b'{"prompt": {"text": "Hi"}}', "prompt: must be a string, a list of strings"),
        (b'{"prompt": ["Hi", 42]}', "prompt: must be a string, a list of strings"),
    ],
)
def test_request_errors_name_the_field(request_body: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        openai.parse(request_body, b"", None)


# --------------------------------------------------------------------------- refusals


def test_refusal_field_of_the_message_is_a_refusal(body: Body) -> None:
    """Structured outputs: the model refuses with `message.refusal` (content null)."""
    response = json.loads(json.dumps(CHAT_RESPONSE))
    response["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": "I'm sorry, I cannot assist with that request.",
    }
    (record,) = openai.parse(body(CHAT_REQUEST), body(response), None)
    assert record.outputs["refusal"] is True
    assert record.outputs["completion_chars"] == 0
    # Only the boolean: the refusal's text is nowhere in the record.
    assert "sorry" not in repr(record)


def test_content_filter_finish_is_a_refusal(body: Body) -> None:
    response = json.loads(json.dumps(CHAT_RESPONSE))
    response["choices"][0]["finish_reason"] = "content_filter"
    (record,) = openai.parse(body(CHAT_REQUEST), body(response), None)
    assert record.outputs["refusal"] is True
    assert record.outputs["finish_reason"] == "content_filter"


def test_streamed_refusal_delta_is_a_refusal(body: Body) -> None:
    stream = [
        _chunk([_delta({"role": "assistant", "content": None, "refusal": ""})]),
        _chunk([_delta({"refusal": "I can't"})]),
        _chunk([_delta({}, "stop")]),
    ]
    (record,) = openai.parse(body(dict(CHAT_REQUEST, stream=True)), _sse(stream), None)
    assert record.outputs["refusal"] is True
    assert record.outputs["finish_reason"] == "stop"


def test_an_empty_or_null_refusal_is_not_one(body: Body) -> None:
    response = json.loads(json.dumps(CHAT_RESPONSE))
    response["choices"][0]["message"]["refusal"] = None
    (record,) = openai.parse(body(CHAT_REQUEST), body(response), None)
    assert record.outputs["refusal"] is False


# --------------------------------------------------------------------------- embeddings

EMBEDDING_REQUEST = {
    "model": "text-embedding-3-small",
    "input": "The food was delicious and the waiter...",
    "encoding_format": "float",
}
EMBEDDING_RESPONSE = {
    "object": "list",
    "data": [
        {"object": "embedding", "embedding": [0.0023064255, -0.009327292, 0.015797347], "index": 0}
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}


def test_embeddings_request_gives_the_vector_and_no_text(body: Body) -> None:
    (record,) = openai.parse(body(EMBEDDING_REQUEST), body(EMBEDDING_RESPONSE), None)
    assert record.features == {
        "model": "text-embedding-3-small",
        "input_chars": len(EMBEDDING_REQUEST["input"]),
    }
    assert record.outputs == {"prompt_tokens": 8, "total_tokens": 8}
    assert record.output_vectors == {"embedding": [0.0023064255, -0.009327292, 0.015797347]}
    assert "delicious" not in repr(record)


def test_embeddings_in_base64_are_decoded_as_float32(body: Body) -> None:
    values = np.array([[0.25, -1.5, 3.0], [1.0, 2.0, -0.125]], dtype="<f4")
    response = {
        "object": "list",
        "data": [
            # out of order: matched to inputs by index
            {
                "object": "embedding",
                "index": 1,
                "embedding": base64.b64encode(values[1].tobytes()).decode(),
            },
            {
                "object": "embedding",
                "index": 0,
                "embedding": base64.b64encode(values[0].tobytes()).decode(),
            },
        ],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    request = {"model": "m", "input": ["first", "second one"], "encoding_format": "base64"}
    records = openai.parse(body(request), body(response), None)
    assert [r.features["input_chars"] for r in records] == [5, 10]
    assert [r.output_vectors["embedding"] for r in records] == values.tolist()
    assert [r.outputs for r in records] == [{}, {}]  # usage counts both inputs: left out


def test_embeddings_vector_takes_the_spec_embedding_name(
    body: Body, make_spec: Callable[..., Any]
) -> None:
    spec = make_spec(embeddings=["prompt_embedding"])
    (record,) = openai.parse(body(EMBEDDING_REQUEST), body(EMBEDDING_RESPONSE), spec)
    assert list(record.output_vectors) == ["prompt_embedding"]


def test_embeddings_error_or_malformed_entries_give_no_vector(body: Body) -> None:
    (record,) = openai.parse(body(EMBEDDING_REQUEST), b'{"error": {"message": "x"}}', None)
    assert record.output_vectors == {}
    bad = {"data": [{"index": 0, "embedding": "not base64!"}]}
    (record,) = openai.parse(body(EMBEDDING_REQUEST), body(bad), None)
    assert record.output_vectors == {}
    assert openai.decode_embedding(["a", 1.0]) is None
    assert openai.decode_embedding(base64.b64encode(b"abc").decode()) is None  # not 4-byte floats


def test_embeddings_token_inputs_and_errors(body: Body) -> None:
    records = openai.parse(body({"input": [[1, 2], [3]]}), b"", None)
    assert [r.features for r in records] == [{}, {}]
    with pytest.raises(ProtocolError, match="input: must be a string"):
        openai.parse(body({"input": {"text": "x"}}), b"", None)
