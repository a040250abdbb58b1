"""The ``lmlab`` command line: a thin layer that parses arguments and calls the library.

Each verb lives in its own module of this package with a ``register(subparsers)``
function; modules are found automatically (a new verb is a new file). Errors print one line
(``lmlab: error: …``) and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback


def verb_modules() -> list[str]:
    """Modules of this package that register a verb (every module but ``common``)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "common" and not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="lmlab", description="lmlab — a language-model laboratory.")
    parser.add_argument("--version", action="version", version=f"lmlab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in verb_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "register"):  # a module may only add metrics under `lmlab eval`
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..core.errors import LmlabError
    from ..core.progress import set_quiet

    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    set_quiet(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except LmlabError as exc:
        if debug:
            traceback.print_exc()
        print(f"lmlab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # unexpected: one line unless --debug
        if debug:
            raise
        print(f"lmlab: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
