"""The commands that look at a study or the zoo: ``show``, ``dashboard`` and ``presets``. They import
no torch, so they answer in about a second where a training command takes several to start."""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading

from fmnist.errors import UsageError
from space import zoo

from search.study import artifacts, opening as studies, record, storage as storages
from search.view.front import format_counts, format_front
from search.view.table import format_table


def existing_study(args: argparse.Namespace):
    """The study named by --study, which must exist in --storage (a SQLite file is not created)."""
    path = storages.sqlite_path(args.storage)
    if path is not None and not path.is_file():
        raise UsageError(f"--storage {storages.shown(args.storage)}: no database at {path}")
    return studies.load_existing(storages.open_storage(args.storage, create=False), args.study)


def show(args: argparse.Namespace) -> int:
    from search.view import hypervolume
    study = existing_study(args)
    print(format_counts(study))
    ref = hypervolume.reference(study)
    print(hypervolume.describe(hypervolume.history(study.get_trials(deepcopy=False), ref), ref))
    if study.user_attrs.get(record.STOPPED):
        print(f"stopped by --stop-when-flat: {study.user_attrs[record.STOPPED]}")
    print(format_front(study))
    return 0


def dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on the study's storage with its weights folder, behind ``search.view.guard``:
    on loopback by default; elsewhere read-only unless --allow-writes, then behind a password."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    from search.view.guard import Policy, guard, is_loopback

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would bury the URL
            pass

    study = existing_study(args)
    folder = artifacts.artifact_dir(args.storage, args.artifact_dir)
    loopback = is_loopback(args.host)
    password = None
    if args.allow_writes and not loopback:
        password = os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(18)
    policy = Policy(loopback=loopback, writes=loopback or args.allow_writes, password=password)
    app = optuna_dashboard.wsgi(storages.open_storage(args.storage, create=False),
                                artifact_store=artifacts.open_store(folder))
    try:
        server = make_server(args.host, args.port, guard(app, policy), handler_class=Quiet)
    except OSError as e:
        raise UsageError(f"--host {args.host} --port {args.port}: cannot listen ({e.strerror or e})") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"optuna-dashboard for study {study.study_name!r} ({storages.shown(args.storage)}, weights in {folder}): "
          f"http://{host}:{server.server_port}/dashboard  (Ctrl-C to stop)")
    if loopback:
        print("this machine only (requests naming another host are refused); deleting or renaming a study is "
              "not served")
    elif password is None:
        print(f"READ-ONLY: listening on {args.host}, so anyone who reaches this port can read the study but "
              f"change nothing (--allow-writes serves writes behind a password); deleting or renaming a study "
              f"is never served")
    else:
        said = (f"the password in ${PASSWORD_ENV}" if os.environ.get(PASSWORD_ENV)
                else f"password {password} (shown once; set ${PASSWORD_ENV} to choose your own)")
        print(f"WRITES ALLOWED behind a login on {args.host}: user fmnist, {said}; deleting or renaming a study "
              f"is never served. Over plain HTTP the password crosses the network readable: prefer an SSH "
              f"tunnel to a dashboard on 127.0.0.1")
    sys.stdout.flush()
    return serve_until_stopped(server)


def serve_until_stopped(server) -> int:
    """Serve until Ctrl-C or SIGTERM; the exit status says which. The signal stops the loop from
    another thread rather than raising: wsgiref's request handler catches every exception, so an
    interrupt raised while a request is being answered would be swallowed and the server kept."""
    stopped: list[int] = []

    def stop(signum, _frame) -> None:
        stopped.append(signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)
    with server:
        server.serve_forever()
    if stopped:
        print(f"fmnist-search: dashboard stopped ({signal.Signals(stopped[0]).name})", file=sys.stderr)
        return 128 + stopped[0]
    return 0


PASSWORD_ENV = "FMNIST_DASHBOARD_PASSWORD"


def presets(args: argparse.Namespace) -> int:
    rows = []
    for p in zoo.PRESETS:
        rows.append([p.name, p.seed_model, f"{p.params:,}",
                     "-" if p.reported_params is None else f"{p.reported_params:,}",
                     "exact" if p.exact else ("-" if p.gap is None else f"{p.gap:+,}"),
                     f"{p.flops / 1e6:.1f}",
                     "-" if p.reported_acc is None else f"{p.reported_acc:.2f}%", p.reported_split])
    print(format_table(["preset", "seed's model", "params", "seed's params", "gap", "MFLOPs",
                        "seed's acc", "measured on"], rows))
    return 0
