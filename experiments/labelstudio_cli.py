"""``labelloop labelstudio sync``: the thin shell around :func:`experiments.labelstudio.sync`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_labelstudio_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``labelstudio sync`` on the top-level subparsers."""
    ls = sub.add_parser("labelstudio", help="push routed tasks to Label Studio projects and pull the answers back")
    actions = ls.add_subparsers(dest="labelstudio_command", required=True, metavar="ACTION")
    sync = actions.add_parser("sync", help="pull answers (closing the tasks they answer), then push open tasks")
    sync.add_argument("--config", default=None, help="a YAML file with the options below as keys "
                                                     "(url, token_env, projects: {kind: id}, stream, store)")
    sync.add_argument("--url", default=None, help="Label Studio's address, e.g. http://127.0.0.1:8080")
    sync.add_argument("--token-env", default=None, help="the environment variable holding the API token "
                                                        "(default LABEL_STUDIO_TOKEN)")
    sync.add_argument("--project", action="append", default=[], metavar="KIND=ID",
                      help="the Label Studio project of a task kind (label, expert, double_blind, audit, "
                           "adjudication); repeat per kind; blind kinds need a project of their own")
    sync.add_argument("--stream", default=None, help="the store's stream")
    sync.add_argument("--store", default=None, help="store URL (default: $LABELLOOP_STORE_URL)")
    sync.add_argument("--pull-only", action="store_true", help="pull answers, push nothing")
    sync.set_defaults(func=_sync)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from experiments.labelstudio import parse_projects
    from loop.exceptions import SchemaError

    base: dict[str, Any] = {}
    if args.config is not None:
        path = Path(args.config)
        if not path.exists():
            raise SchemaError(f"The '--config' file {str(path)!r} does not exist.")
        base = yaml.safe_load(path.read_text()) or {}
        base = base.get("labelstudio", base)
    flags = {"url": args.url, "token_env": args.token_env, "stream": args.stream, "store_url": args.store,
             "projects": parse_projects(args.project) or None}
    opts = {**{("store_url" if k == "store" else k): v for k, v in base.items()},
            **{k: v for k, v in flags.items() if v is not None}}
    opts.setdefault("token_env", "LABEL_STUDIO_TOKEN")
    missing = [k for k in ("url", "projects", "stream") if not opts.get(k)]
    if missing:
        raise SchemaError(f"labelstudio sync needs {missing} (flags or --config).")
    if args.pull_only:
        opts["push"] = False
    return opts


def _sync(args: argparse.Namespace) -> int:
    from experiments.labelstudio import SyncConfig, sync
    from loop.exceptions import SchemaError

    opts = _options(args)
    try:
        cfg = SyncConfig(**opts)
    except TypeError as exc:
        raise SchemaError(f"labelstudio sync: {exc}") from None
    result = sync(cfg)
    skipped = ", ".join(f"{n} {k}" for k, n in sorted(result.not_pushed.items()))
    print(f"pulled {result.pulled} answers ({result.already} already stored), {result.closed} tasks closed; "
          f"pushed {result.pushed} tasks" + (f"; not pushed (no project for their kind): {skipped}" if skipped else ""))
    return 0
