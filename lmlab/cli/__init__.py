"""The ``lmlab`` command line: a thin layer that parses arguments and calls the library.

Each verb lives in its own module of this package with a ``register(subparsers)``
function; modules are found automatically (a new verb is a new file). Registering imports nothing
heavy (the run functions import torch and the rest), so ``--help`` starts fast; a verb whose options
can only be listed by importing the library (``pretrain``'s every model and training setting) adds
them in ``complete(parser)``, called only when that verb is on the command line. Errors print one
line (``lmlab: error: …``) and exit 1; ``--debug`` shows the traceback.
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


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command tree; given the command line ``argv``, only the verb it names is completed
    (see the module docstring), else every verb is."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="lmlab", description="lmlab — a language-model laboratory.")
    parser.add_argument("--version", action="version", version=f"lmlab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    named = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name in verb_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        if not hasattr(module, "register"):  # a module may only add metrics under `lmlab eval`
            continue
        before = set(sub.choices)
        module.register(sub)
        if hasattr(module, "complete"):
            for verb in set(sub.choices) - before:
                if argv is None or verb == named:
                    module.complete(sub.choices[verb])
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..core.errors import LmlabError
    from ..core.progress import set_quiet

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    debug = getattr(args, "debug", False)
    set_quiet(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except LmlabError as exc:
        if debug:
            traceback.print_exc()
        from .common import in_flag_terms

        print(f"lmlab: error: {in_flag_terms(exc, args)}", file=sys.stderr)
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
