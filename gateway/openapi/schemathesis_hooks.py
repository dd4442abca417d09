"""Checks Schemathesis runs beside its own (schemathesis.sh loads this file
with SCHEMATHESIS_HOOKS)."""

import json

import schemathesis


@schemathesis.check
def error_is_code_and_message(ctx, response, case):
    """Every 4xx and 5xx answer is a JSON object with a string `code` and `message`."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"a {response.status_code} answer is not JSON: {response.content[:200]!r}")
    if not isinstance(body, dict) or not isinstance(body.get("code"), str) or not isinstance(body.get("message"), str):
        raise AssertionError(f"a {response.status_code} answer is not {{code, message}}: {body!r}"[:300])
    return None
