"""The session layer against QuickFIX's own acceptance definitions, strict mode.

Runs ``run_engine.py simulate conformance`` as a separate process and plays
shared/fix-acceptance/definitions/fix44 (59 files) and fix42 (58 files) with
the shared runner, both suites at once (they use different CompIDs).
Skipped where shared/ is not beside the checkout (a user machine).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, shared_dir

pytestmark = pytest.mark.conformance

SHARED = shared_dir()


@pytest.mark.skipif(SHARED is None, reason="shared/fix-acceptance is not beside this checkout")
def test_quickfix_acceptance_definitions_strict() -> None:
    assert SHARED is not None
    accept = SHARED / "fix-acceptance"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "run_engine.py"), "--log-level", "error", "simulate",
         "conformance", "--port", str(port)], cwd=ROOT)
    try:
        runs = {}
        for version, expected in (("fix44", 59), ("fix42", 58)):
            files = sorted((accept / "definitions" / version).glob("*.def"))
            assert len(files) == expected
            runs[version] = subprocess.Popen(
                [sys.executable, str(accept / "run_definitions.py"), "--port", str(port),
                 "--mode", "strict", "--fields-fmt", str(accept / "definitions" / "fields.fmt"),
                 *map(str, files)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        outputs = {v: p.communicate(timeout=400)[0] for v, p in runs.items()}
    finally:
        server.terminate()
        server.wait(timeout=10)
    failures = {v: [line for line in out.splitlines() if not line.startswith("PASS")]
                for v, out in outputs.items()}
    assert outputs["fix44"].rstrip().endswith("59 tests passed"), failures["fix44"]
    assert outputs["fix42"].rstrip().endswith("58 tests passed"), failures["fix42"]
