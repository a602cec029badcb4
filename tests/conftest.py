from __future__ import annotations

import socket
from pathlib import Path

import pytest

from adapters import logs

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    logs.configure("warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shared_dir() -> Path | None:
    """The shared/ folder beside the checkout (CI and dev machines have it)."""
    for candidate in (ROOT.parent / "shared", ROOT / "shared"):
        if (candidate / "fix-acceptance" / "run_definitions.py").exists():
            return candidate
    return None


@pytest.fixture
def port() -> int:
    return free_port()
