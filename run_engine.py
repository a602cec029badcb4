#!/usr/bin/env python3
"""FX STP engine: the one entry point.  ``python run_engine.py --help``."""

from __future__ import annotations

import sys

from adapters.cli import main

if __name__ == "__main__":
    sys.exit(main())
