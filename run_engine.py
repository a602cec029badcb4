#!/usr/bin/env python3
"""FX STP engine: the one entry point.  ``python run_engine.py --help``.

``run_engine.py simulate ...`` runs QA's simulators (``fixsim.cli``), which
the engine's own commands (``app.cli``) never import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    log_level = None
    if len(args) >= 2 and args[0] == "--log-level":
        log_level, rest = args[1], args[2:]
    else:
        rest = args
    if rest and rest[0] == "simulate":
        from adapters import logs
        from fixsim.cli import main as simulate

        logs.configure(log_level)
        return simulate(rest[1:])
    from app.cli import main as engine

    return engine(args)


if __name__ == "__main__":
    sys.exit(main())
