"""The errors labelloop raises.

::

    LoopError
     +-- SchemaError (also ValueError)      bad argument: shape, range, column, option
     +-- NotFittedError (also AttributeError) estimator used before ``fit``
     +-- StoreError                          the label store refused a write or a read
          +-- ConflictError                  a concurrent write won, or a key was reused
          +-- NotFoundError (also SchemaError) no such task, item or token
          +-- ForbiddenError                 the caller may not touch this (not their task)

Every message names the argument, the form it expects and what it was given.
"""

from __future__ import annotations

__all__ = ["ConflictError", "ForbiddenError", "LoopError", "NotFittedError", "NotFoundError", "SchemaError",
           "StoreError"]


class LoopError(Exception):
    """Base class of every error labelloop raises on purpose."""


class SchemaError(LoopError, ValueError):
    """An argument does not have the expected shape, range, columns or value."""


class NotFittedError(LoopError, AttributeError):
    """An estimator was used before ``fit`` was called."""


class StoreError(LoopError):
    """The label store refused a write or a read."""


class ConflictError(StoreError):
    """A concurrent write won, or an idempotency key was reused with other content."""


class NotFoundError(StoreError, SchemaError):
    """A named task, item, dispute or token does not exist (also a SchemaError: a bad argument)."""


class ForbiddenError(StoreError):
    """The caller may not act on this entity: e.g. answering a task assigned to someone else."""
