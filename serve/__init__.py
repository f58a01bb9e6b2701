"""labelloop's serving layer: a Ray Serve app that scores and routes items over HTTP.

- :mod:`serve.app`: the deployments (Router, the HTTP ingress, and Scorer) and ``build_app``.
- :mod:`serve.tasks`: the task API (people in the loop) in the Router's app, over the label store.
- :mod:`serve.auth`: bearer tokens and roles, as FastAPI dependencies.
- :mod:`serve.client`: :class:`~serve.client.ServeClient`, arrays in, frames out.
- :mod:`serve.local`: ``start_local`` / ``shutdown_local`` on this machine.
- :mod:`serve.config`: Serve config YAML, written and read back.
- :mod:`serve.registry`: publish a model where the Scorer finds it.
- :mod:`serve.payload`: the JSON bodies; :mod:`serve.exceptions`: the errors.

Importing :mod:`serve` loads neither Ray nor MLflow; the submodules that need them do.
"""

from .exceptions import RequestError, ServeError, ServiceUnavailable

__all__ = ["RequestError", "ServeError", "ServiceUnavailable"]
