"""loop._redact.redact: URL passwords and secret query values are hidden, everything else kept."""

from __future__ import annotations

import pytest

from loop._redact import redact


@pytest.mark.parametrize(("given", "shown"), [
    ("http://user:s3cret@mlflow:5000", "http://user:***@mlflow:5000"),
    ("postgresql://user:s3cret@127.0.0.1:5432/test", "postgresql://user:***@127.0.0.1:5432/test"),
    ("NoModel: Cannot reach http://user:s3cret@host/api (ConnectionError)",
     "NoModel: Cannot reach http://user:***@host/api (ConnectionError)"),
    ("{'tracking_uri': 'http://u:s3cret@h:5000'}", "{'tracking_uri': 'http://u:***@h:5000'}"),
    ("tracking_uri: \"http://u:s3cret@h:5000\"", "tracking_uri: \"http://u:***@h:5000\""),
    ("http://h/api?x=1&password=s3cret&token=t0k", "http://h/api?x=1&password=***&token=***"),
    ("s3://b/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA/x", "s3://b/k?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("https://h/?access_token=abc#frag", "https://h/?access_token=***#frag"),
    ("postgresql://labelloop@db/labels", "postgresql://labelloop@db/labels"),
    ("design=1&signal=2&author=x&model.allow_pickle=true", "design=1&signal=2&author=x&model.allow_pickle=true"),
])
def test_secrets_are_hidden(given: str, shown: str) -> None:
    assert redact(given) == shown
    assert redact(shown) == shown  # idempotent
