"""One way to hide secrets in text that is logged, printed, tracked or sent in an HTTP answer.

:func:`redact` hides the password of every URL (``scheme://user:password@host``, as SQLAlchemy
renders a URL with ``hide_password=True``) and the value of secret-looking query parameters
(``?password=...``, ``&token=...``, ``api_key=`` ...). Everything that writes configuration or
error text where others read it (MLflow params, tags and artifacts, the CLI, the Serve app's
answers and logs) calls it: the same rule everywhere, written once.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# The password of a URL, up to the last "@" before the path: a database URL's password may
# hold "@" in plain text. The user name stays (it tells which account, not how to log in).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/'\"]*(?=@)")
# name=value pairs whose name says secret, in a query string or a key=value text:
# names ending in password, passwd, pwd, token, secret, api_key, apikey, signature, credential(s)
# (access_token=, client_secret=, X-Amz-Signature=...), and sig= and auth=.
_SECRET_PARAM = re.compile(
    r"(?P<head>(?<![A-Za-z0-9_\-])(?:[A-Za-z0-9_\-]*(?:password|passwd|pwd|token|secret|api[_\-]?key|apikey|"
    r"signature|credentials?)|sig|auth)=)[^&\s#'\",;]+",
    re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL passwords and secret query values shown as ``***``.

    Parameters
    ----------
    text : str

    Returns
    -------
    str

    Examples
    --------
    >>> redact("postgresql+psycopg://labelloop:s3cret@db:5432/labels")
    'postgresql+psycopg://labelloop:***@db:5432/labels'
    >>> redact("http://user:p@ss@mlflow:5000/?x=1&token=abc&password=s3cret")
    'http://user:***@mlflow:5000/?x=1&token=***&password=***'
    >>> redact("sqlite:///optuna.db")
    'sqlite:///optuna.db'
    """
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    return _SECRET_PARAM.sub(rf"\g<head>{MASK}", text)
