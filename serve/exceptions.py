"""The errors the serving layer raises.

::

    LoopError                     (loop.exceptions)
     +-- ServeError               the Serve app answered with an error, or could not be reached
          +-- RequestError        the app refused the request (4xx): bad shape, NaN, unknown field...
          +-- ServiceUnavailable  no model is loaded yet, the app is down, or it timed out

``ServeError`` carries the HTTP status and the server's JSON error (``field``, ``message``)
so a caller can show exactly what the app said.
"""

from __future__ import annotations

from loop.exceptions import LoopError

__all__ = ["RequestError", "ServeError", "ServiceUnavailable"]


class ServeError(LoopError):
    """The Serve app answered with an error, or could not be reached.

    Parameters
    ----------
    message : str
        What went wrong, in a sentence.
    status : int or None
        HTTP status of the answer; None when there was no answer.
    field : str or None
        The request field the error is about (``"features"``, ``"labels.3"``...), if any.
    """

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None) -> None:
        self.message = message
        self.status = status
        self.field = field
        where = f" (field {field!r})" if field else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{code}{message}{where}")

    def __reduce__(self):  # keep status and field when pickled across Ray processes
        return (_rebuild, (type(self), self.message, self.status, self.field))


class RequestError(ServeError):
    """The app refused the request (HTTP 4xx)."""


class ServiceUnavailable(ServeError):
    """No model is loaded yet, the app is down or it did not answer in time."""


def _rebuild(cls: type[ServeError], message: str, status: int | None, field: str | None) -> ServeError:
    return cls(message, status=status, field=field)
