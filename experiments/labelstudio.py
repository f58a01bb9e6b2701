"""``labelloop labelstudio sync``: routed tasks out to Label Studio projects, answers back.

::

    labelloop labelstudio sync --url http://ls:8080 --token-env LABEL_STUDIO_TOKEN \\
        --project label=1 --project expert=2 --project double_blind=3 --project audit=3 \\
        --stream sentiment --store postgresql://...

One run pulls every answer given in the projects since the last one (the store refuses
nothing twice: keys are Label Studio's annotation ids) and closes the tasks they answer, then
pushes the open tasks not pushed before, each to the project of its kind. The route decides
the kind, so it decides the project and so who sees the item. A project takes blind kinds
(``double_blind``, ``audit``, or any task marked blind) or open ones, never both: blind tasks
go without the model's pre-annotation and the route's reason, and the labelloop tasks of one
item (a double-blind pair) become one Label Studio task whose ``maximum_annotations`` is the
pair's size, so Label Studio hands it to that many different people, none of whom sees the
other's answer (``show_collab_predictions`` off). Label Studio's Community edition shows
every project to every member of the organisation; per-project membership and task
assignment (``/api/projects/{id}/tasks/assignees``) are Enterprise features.

The token comes from an environment variable only and is never printed. Label Studio 1.23
issues personal access tokens (JWT refresh tokens: :class:`HttpTransport` trades them for
short-lived access tokens at ``/api/token/refresh/``); a legacy token works too where the
server allows them (``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``). The REST client is
:mod:`serve.labelstudio_api`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from loop.columns import ITEM
from loop.exceptions import SchemaError
from loop.labelstudio import SYSTEM, TASK_ID, TASK_IDS
from loop.store import LabelStore, TaskStatus
from loop.store._schema import TASK_KINDS
from serve.labelstudio_api import HttpTransport, LabelStudioClient

__all__ = ["SyncConfig", "SyncResult", "parse_projects", "sync"]

BLIND_KINDS = ("double_blind", "audit")


@dataclass(frozen=True)
class SyncConfig:
    """What ``labelloop labelstudio sync`` connects.

    Parameters
    ----------
    url : str
        Label Studio's address.
    token_env : str
        The environment variable holding the API token (never a command-line value).
    projects : mapping of task kind to project id
        Where each kind of task goes (``label``, ``expert``, ``double_blind``, ``audit``,
        ``adjudication``); kinds without a project are not pushed. A project takes blind kinds
        or open ones, not both.
    stream : str
    store_url : str, optional
        Default: ``$LABELLOOP_STORE_URL``, else ``sqlite:///labelloop.db``.
    from_name, to_name, reason_name : str
        The labelling config's ``Choices``, object and read-only reason ``TextArea`` names.
    """

    url: str
    token_env: str
    projects: Mapping[str, int]
    stream: str
    store_url: str | None = None
    from_name: str = "label"
    to_name: str = "text"
    reason_name: str = "reason"
    push: bool = True
    pull: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise SchemaError(f"The 'url' of Label Studio must start with http:// or https://; got {self.url!r}.")
        if not self.projects:
            raise SchemaError("The 'projects' must map at least one task kind to a Label Studio project id, "
                              "e.g. --project label=1.")
        for kind, project in self.projects.items():
            if kind not in TASK_KINDS:
                raise SchemaError(f"The 'projects' kind must be one of {list(TASK_KINDS)}; got {kind!r}.")
            if not isinstance(project, int) or isinstance(project, bool) or project < 1:
                raise SchemaError(f"The 'projects' id for {kind!r} must be an integer >= 1; got {project!r}.")
        for project in set(self.projects.values()):
            kinds = {k for k, p in self.projects.items() if p == project}
            if kinds & set(BLIND_KINDS) and kinds - set(BLIND_KINDS):
                raise SchemaError(f"The 'projects' put blind kinds {sorted(kinds & set(BLIND_KINDS))} and open "
                                  f"kinds {sorted(kinds - set(BLIND_KINDS))} in one project ({project}); blind "
                                  "answers must stay apart: give them a project of their own.")

    def token(self) -> str:
        value = os.environ.get(self.token_env)
        if not value:
            raise SchemaError(f"The 'token_env' names ${self.token_env}, which is not set: export the Label "
                              "Studio API token in it.")
        return value


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    pulled: int          # answers stored now
    already: int         # answers stored by an earlier run (or a webhook)
    closed: int          # labelloop tasks closed (answered) over all runs, as the store says
    pushed: int          # labelloop tasks pushed now
    not_pushed: dict[str, int] = field(default_factory=dict)  # open tasks per kind with no project


def sync(cfg: SyncConfig, *, store: LabelStore | None = None, client: LabelStudioClient | None = None) -> SyncResult:
    """Pull answers, close the tasks they answer, push the open tasks not pushed yet."""
    store = store if store is not None else LabelStore(cfg.store_url)
    client = client if client is not None else LabelStudioClient(HttpTransport(cfg.url, cfg.token()))
    inserted = existing = 0
    if cfg.pull:
        users = client.users()
        for project in sorted(set(cfg.projects.values())):
            done = _answered(client.export(project))
            _repair_links(store, project, done)
            if done:
                result = store.import_label_studio(cfg.stream, done, users=users, from_name=cfg.from_name)
                inserted, existing = inserted + result.inserted, existing + result.existing
    pushed, not_pushed = _push(cfg, store, client) if cfg.push else (0, {})
    links = store.external_tasks_frame(SYSTEM)
    return SyncResult(pulled=inserted, already=existing, closed=int(links["closed_at"].notna().sum()),
                      pushed=pushed, not_pushed=not_pushed)


def _answered(export: list[dict]) -> list[dict]:
    """The exported tasks labelloop pushed that hold at least one annotation."""
    return [t for t in export if ITEM in t.get("data", {}) and t.get("annotations")]


def _repair_links(store: LabelStore, project: int, export: list[dict]) -> None:
    # A run that pushed tasks but died before linking them: link them now, so they are not
    # pushed twice.
    links = {}
    for task in export:
        for k, task_id in enumerate(task.get("data", {}).get(TASK_IDS, [])):
            links[_external_id(task["id"], k)] = int(task_id)
    if links:
        store.link_external_tasks(SYSTEM, str(project), links)


def _external_id(ls_task: int, k: int) -> str:
    return str(ls_task) if k == 0 else f"{ls_task}/{k}"


def _push(cfg: SyncConfig, store: LabelStore, client: LabelStudioClient) -> tuple[int, dict[str, int]]:
    # Open tasks only: an assigned one is someone's in labelloop's own queue already, and a
    # task must never be worked in both tools (next_task skips what is linked and still open).
    exported = store.export_label_studio(cfg.stream, from_name=cfg.from_name, to_name=cfg.to_name,
                                         reason_name=cfg.reason_name, statuses=(TaskStatus.OPEN,))
    if not exported:
        return 0, {}
    tasks = store.tasks_frame(cfg.stream).set_index("task_id")
    linked = set(store.external_tasks_frame(SYSTEM)["task_id"].astype(int))
    by_project: dict[int, list[dict]] = {}
    blind_projects = {cfg.projects[k] for k in BLIND_KINDS if k in cfg.projects}
    not_pushed: dict[str, int] = {}
    pairs: dict[tuple[int, str], dict] = {}
    for entry in exported:
        task_id = int(entry["data"].pop(TASK_ID))
        if task_id in linked:
            continue
        kind, blind = tasks.at[task_id, "kind"], bool(tasks.at[task_id, "blind"])
        project = cfg.projects.get(kind)
        if project is None:
            not_pushed[kind] = not_pushed.get(kind, 0) + 1
            continue
        if blind:
            # One Label Studio task per item: its copies go to different people.
            key = (project, entry["data"][ITEM])
            if key in pairs:
                pairs[key]["data"][TASK_IDS].append(task_id)
                continue
            entry.pop("predictions", None)
            pairs[key] = entry
            blind_projects.add(project)
        entry["data"][TASK_IDS] = [task_id]
        by_project.setdefault(project, []).append(entry)
    pushed = 0
    for project, entries in sorted(by_project.items()):
        if project in blind_projects:
            # As many different people as the widest group has copies; none sees another's answer.
            widest = max(len(e["data"][TASK_IDS]) for e in entries)
            client.update_project(project, maximum_annotations=widest, show_collab_predictions=False)
        ids = client.import_tasks(project, entries)
        links = {_external_id(ls, k): t for ls, e in zip(ids, entries) for k, t in enumerate(e["data"][TASK_IDS])}
        store.link_external_tasks(SYSTEM, str(project), links)
        pushed += len(links)
    return pushed, not_pushed


def parse_projects(values: Sequence[str]) -> dict[str, int]:
    """``["label=1", "double_blind=3"]`` -> ``{"label": 1, "double_blind": 3}``."""
    out: dict[str, int] = {}
    for value in values:
        kind, sep, project = value.partition("=")
        if not sep or not project.strip().isdigit():
            raise SchemaError(f"The '--project' must read KIND=ID (e.g. label=1); got {value!r}.")
        out[kind.strip()] = int(project)
    return out
