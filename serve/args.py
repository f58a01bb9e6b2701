"""The arguments of the Serve application, validated at the edge with pydantic.

``serve run serve.app:build_app model_name=digits tracking_uri=sqlite:///mlflow.db`` and a
Serve config YAML (``import_path: serve.app:build_app`` with ``args: {...}``) both arrive here
as a plain mapping; :class:`AppArgs` checks it once, before any replica starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_serializer, field_validator

from loop.routing import RoutingThresholds

from .http import DEFAULT_MAX_BODY_BYTES

__all__ = ["APP_NAME", "AppArgs", "LabelStudioArgs"]

APP_NAME = "labelloop"


class LabelStudioArgs(BaseModel):
    """The Label Studio ML backend the Router serves under ``/labelstudio`` (:mod:`serve.labelstudio`).

    Parameters
    ----------
    stream : str
        The store's stream the Label Studio project labels.
    from_name, to_name, reason_name : str
        The labelling config's ``Choices``, the object it labels, and the read-only
        ``TextArea`` that shows the route's reason.
    features_key : str, default="features"
        Where a task's data (or its item's payload in the store) holds the model's features.
    url : str, optional
        Label Studio's address, to look up the email of the user a webhook names by id.
    token_env : str, optional
        The environment variable (in the replicas) holding a Label Studio API token for that.

    The webhook, ``/setup`` and ``/predict`` authenticate with the store's tokens
    (:mod:`serve.auth`), and use the app's ``store_url``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str = Field(min_length=1)
    from_name: str = Field("label", min_length=1)
    to_name: str = Field("text", min_length=1)
    reason_name: str = Field("reason", min_length=1)
    features_key: str = Field("features", min_length=1)
    url: str | None = None
    token_env: str | None = None


class AppArgs(BaseModel):
    """What the app serves and how.

    Parameters
    ----------
    model_name : str
        Registered model name in the MLflow model registry.
    alias : str, default="champion"
        Registry alias the Scorer serves (``models:/<model_name>@<alias>``).
    tracking_uri : str, optional
        MLflow tracking URI (``sqlite:////abs/mlflow.db``, ``http://mlflow:5000``); default:
        MLflow's own resolution (``MLFLOW_TRACKING_URI``).
    registry_uri : str, optional
        Model registry URI when it differs from the tracking URI.
    thresholds : RoutingThresholds or mapping, optional
        The Router's initial thresholds: a mapping in
        :meth:`loop.routing.RoutingThresholds.to_dict` form is parsed here, once, and kept as
        the object. A Serve config's ``user_config`` for the Router wins.
    class_names : list of str or int, optional
        Names of the model's classes in column order; answers use them for ``predicted``,
        ``runner_up`` and ``classes``, and requests may give labels by name. Default: the
        class codes ``0 .. k - 1``.
    refresh_seconds : float > 0, optional
        Poll the registry alias this often and load a new version when it moves.
        ``POST /v1/reload`` loads one at once either way.
    max_batch_size : int, default=16
        Requests the Scorer merges into one ``predict_proba`` call, and the Router into one
        ``route`` call (``@serve.batch``).
    batch_wait_timeout_s : float, default=0.002
        How long they wait for a batch to fill.
    scorer_replicas : int, default=1
        Scorer replicas. With more than one, ``POST /v1/reload`` reaches one of them; set
        ``refresh_seconds`` so that every replica follows the alias.
    router_replicas : int, default=1
        Router replicas (the HTTP ingress: parses the JSON, routes, writes the answer).
    replica_cpus : float, default=0.25
        CPUs reserved per replica (fractional, so that the app fits on a laptop).
    max_rows_per_request : int, default=65536
        Larger requests get HTTP 413. The Router asks the Scorer in parts that fit a replica
        message (gRPC's 4 MiB), so the largest request is bounded by this and
        ``max_body_bytes`` only.
    max_body_bytes : int, default=67108864 (64 MiB)
        Larger request bodies get HTTP 413, before they are read whole (``Content-Length``,
        or counted as they stream): sized for ``max_rows_per_request`` rows of 64 float64
        features in the compact form (:data:`serve.http.DEFAULT_MAX_BODY_BYTES`).
    trusted_modules : list of str, default=[]
        Modules whose types a served model may hold beyond skops' defaults and labelloop's
        (a config's ``model.estimator``: :func:`experiments.models.trusted_modules`).
    allow_pickle : bool, default=False
        Whether the Scorer may load model flavours that unpickle, and so run code, when they
        load (:func:`serve.registry.load_model`).
    store_url : str, optional
        The label store (``sqlite:////abs/labels.db``, ``postgresql://...``): the task API's
        streams, tasks and answers, and the bearer tokens. Without it the app only scores and
        routes.
    auth : "token" or "none", default="token"
        ``token``: every endpoint but ``/v1/health`` needs a bearer token issued by the store
        (``labelloop tokens issue``); without ``store_url`` no token can be checked, and every
        such request gets 401 saying so. ``none``: the scoring
        endpoints (score, route, model, thresholds, metrics) need no token, for a local demo;
        the task and admin endpoints still do.
    task_sla_hours : float > 0, default=24
        When a task created through the API (or a dispute) is due, unless the request says.
    label_studio : LabelStudioArgs or mapping, optional
        Serve Label Studio's ML backend protocol under ``/labelstudio`` for this stream.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model_name: str = Field(min_length=1)
    alias: str = Field("champion", min_length=1)
    tracking_uri: str | None = None
    registry_uri: str | None = None
    thresholds: RoutingThresholds | None = None
    class_names: list[StrictInt | StrictStr] | None = None
    refresh_seconds: float | None = Field(None, gt=0)
    max_batch_size: int = Field(16, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.002, ge=0, le=1)
    scorer_replicas: int = Field(1, ge=1)
    router_replicas: int = Field(1, ge=1)
    replica_cpus: float = Field(0.25, gt=0)
    max_rows_per_request: int = Field(65536, ge=1)
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    trusted_modules: list[StrictStr] = Field(default_factory=list)
    allow_pickle: bool = False
    store_url: str | None = Field(None, min_length=1)
    auth: Literal["token", "none"] = "token"
    task_sla_hours: float = Field(24.0, gt=0)
    label_studio: LabelStudioArgs | None = None

    @field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds_load(cls, value: Any) -> RoutingThresholds | None:
        # Fail here, with the key named, rather than in a Router replica later.
        if value is None or isinstance(value, RoutingThresholds):
            return value
        return RoutingThresholds.from_dict(value)

    @field_serializer("thresholds")
    def _thresholds_dump(self, value: RoutingThresholds | None) -> dict[str, Any] | None:
        return None if value is None else value.to_dict()

    @field_validator("class_names")
    @classmethod
    def _class_names_distinct(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and (len(value) < 2 or len(set(map(str, value))) != len(value)):
            raise ValueError(f"expected at least 2 distinct class names, got {value!r}")
        return value

    def routing_thresholds(self) -> RoutingThresholds:
        """The initial thresholds as a :class:`~loop.routing.RoutingThresholds`."""
        return self.thresholds if self.thresholds is not None else RoutingThresholds()
