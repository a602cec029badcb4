"""Messages quickfix discards because its CheckSum sum overflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.fix.oversize import SIGNATURE, discarded, largest_field_tag
from stp.fixwire import finish
from tests.unit.test_poison import Log, cfg


def test_quickfix_discards_a_message_whose_byte_sum_passes_2_31() -> None:
    """Why adapters/fix/oversize.py exists: quickfix's own parse of a valid
    20 MB message (CheckSum right) reports a negative computed CheckSum."""
    fix = pytest.importorskip("quickfix")
    body = "35=8\x0134=6\x0149=LP1\x0152=20261204-03:58:00.000\x0156=STP\x0158=" + "x" * 20_000_000 + "\x01"
    wire = finish("FIX.4.4", body).decode("latin-1")
    with pytest.raises(fix.InvalidMessage) as caught:
        fix.Message(wire, True)
    assert SIGNATURE.decode() in str(caught.value)
    small = finish("FIX.4.4", body.replace("x" * 20_000_000, "x" * 17_000_000)).decode("latin-1")
    fix.Message(small, True)                            # below 2^31: fine


def test_the_discarded_message_is_the_expected_one_over_the_cap(tmp_path: Path) -> None:
    config = cfg(tmp_path)
    log = Log(config)
    log.received(5)
    log.received(6, text="x" * 5000)                    # discarded
    log.received(7)                                      # too high: quickfix queued it
    log.sent(3, "2")                                     # its ResendRequest
    found = discarded(log.path, "LP1", 6, 4096)
    assert found is not None and found.seq == 6 and len(found.raw) > 5000
    assert largest_field_tag(found.raw) == 58
    assert discarded(log.path, "LP1", 6, 8192) is None  # under the cap: not ours to answer
    assert discarded(log.path, "LP1", 8, 4096) is None  # not received
