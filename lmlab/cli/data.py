"""``lmlab data``: the named data sets and where they are."""

from __future__ import annotations

import argparse

from .common import add_common, emit, table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data sets: list what is available")
    verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    ls = add_common(verbs.add_parser("list", help="list the named data sets and whether they are present"))
    ls.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from ..data import data_root, list_datasets

    rows = list_datasets()
    root = str(data_root())
    human = table([[r["name"], "yes" if r["present"] else "no", ",".join(r["splits"]), r["description"]]
                   for r in rows], ["name", "present", "splits", "description"])
    human += f"\n\ndata root: {root} (set LMLAB_DATA to change it); the embedded corpus is always available as 'embedded'"
    emit(args, {"data_root": root, "datasets": rows}, human)
    return 0
