"""Bodies found by the fuzz corpus to answer 500: JSON nested 100,000 deep, and an escaped lone surrogate
(it parses, then fails where the text is encoded: SQLite, or the error message quoting it)."""

import asyncio
import json

import pytest
from starlette.requests import Request

from inhouse.errors import InvalidInputError
from inhouse.serve.app import parse
from inhouse.serve.openai import CreateJobRequest, error_body


def _request(body: bytes) -> Request:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


@pytest.mark.parametrize("body,needle", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
    (b'{"model": "tiny", "training_file": "\\ud800"}', "lone surrogate escape (\\ud800)"),
])
def test_odd_bodies_are_400_with_a_reason(body, needle):
    with pytest.raises(InvalidInputError) as info:
        asyncio.run(parse(_request(body), CreateJobRequest))
    assert needle in str(info.value)


def test_an_error_quoting_a_surrogate_can_still_be_sent():
    body = error_body("The model '\ud800' does not exist", param="\udcff")
    assert json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert body["error"]["message"] == "The model '\\ud800' does not exist"
