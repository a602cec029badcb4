"""What an LP sends that the gateway used to lose or die on, through the real
engine and gateway (quickfix) from a hand-driven LP (the project's session
layer, which writes str values as ISO-8859-1 bytes): text that is not
UTF-8, a message over the size cap, a message that kills the gateway."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from adapters.db import queries
from adapters.fix.quickfix import CRASH_ON_ENV
from fixsim.dictionary import load_dictionary
from fixsim.session import Session, SessionConfig
from fixsim.store import MemoryStore
from fixsim.transport import FixAcceptor
from tests.conftest import free_port
from tests.integration.test_engine_intake import (  # noqa: F401 (engine_factory: a fixture)
    RecordingApp,
    engine_factory,
    er,
    write_config,
)

BIG = 20 * 1024 * 1024


async def _rows(url: str, table: str) -> list[dict[str, Any]]:
    from adapters.db.repository import Database

    db = Database(url)
    try:
        return await (db.journal_rows() if table == "journal" else db.fills_rows())
    finally:
        await db.close()


async def _breaks(url: str) -> list[dict[str, Any]]:
    from adapters.db.repository import Database

    db = Database(url)
    try:
        return await queries.list_breaks(db)
    finally:
        await db.close()


def _events(engine: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in engine.events() if e.get("event") == name]


async def _lp(port: int) -> tuple[Session, RecordingApp, FixAcceptor]:
    app = RecordingApp()
    session = Session(SessionConfig("FIX.4.4", "LP1", "STP"), app, MemoryStore(), load_dictionary("FIX.4.4"))
    acceptor = FixAcceptor([session], "127.0.0.1", port)
    await acceptor.start()
    return session, app, acceptor


async def _send(acceptor: FixAcceptor, session: Session, sends: list[tuple[str, list[tuple[int, str]]]],
                ) -> list[int]:
    conn = acceptor.connection(session)
    assert conn is not None
    seqs = [session.send(msg_type, body) for msg_type, body in sends]
    conn.flush()
    return seqs


async def test_latin1_bytes_and_a_20_mb_message_are_journaled_and_the_session_goes_on(
        tmp_path: Path, engine_factory: Any) -> None:  # noqa: F811
    lp_port = free_port()
    url = f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}"
    cfg = write_config(tmp_path / "engine.toml", url, lp_port, None)
    session, app, acceptor = await _lp(lp_port)
    engine = engine_factory(cfg)
    try:
        await asyncio.wait_for(app.logged_on.wait(), 60)
        seqs = await _send(acceptor, session, [
            ("8", er("GOOD-1")),
            ("8", er("LATIN-1", t58="caf\xe9 \xff\xfe")),       # the bytes E9 FF FE: not UTF-8
            ("8", er("BIN-\xff\xfe")),                          # an ExecID that is not UTF-8
            ("8", er("ACCT-1", t1="ACC\xff")),                  # an Account that is not UTF-8
            ("8", er("BIG-1", t58="x" * BIG)),                  # over the cap; quickfix's CheckSum overflows
            ("8", er("AFTER-1")),
            ("8", er("BIG-2", t58="y" * 2_000_000)),            # over the 1 MiB cap: fromApp rejects it
            ("8", er("BIN-\xff\xfe")),                          # the same report again: a duplicate
            ("8", er("UTF8-1", t58="caf\xc3\xa9")),             # "café" in UTF-8
            ("8", er("AFTER-2")),
        ])
        status = await asyncio.to_thread(engine.wait_for, lambda s: s["journal"] >= 12, 180)
        rejects = [m for m in app.received if m.msg_type == "3"]
        assert sorted((int(m[45]), m[373], m[371]) for m in rejects) == [(seqs[4], "5", "58"),
                                                                         (seqs[6], "5", "58")]
        assert status["executions"] == 7                    # every fill, before and after the big ones
        assert status["duplicates_ignored"] == 1
        assert status["oversized"] == 2 and status["poison"] == 0
        assert status["rejected_by_outcome"]["session_reject"] == 2
        assert status["raw_not_utf8"] == 4
        assert status["sessions"]["LP1"]["last_seq"] == seqs[-1]
        assert session.logged_on
        # the session goes on: one more report after all that
        [last] = await _send(acceptor, session, [("8", er("AFTER-3"))])
        status = await asyncio.to_thread(engine.wait_for, lambda s: s["executions"] >= 8, 60)
        assert status["sessions"]["LP1"]["last_seq"] == last
    finally:
        await asyncio.to_thread(engine.stop)
        await acceptor.stop(logout_wait=0.5)
    assert not _events(engine, "fix_gateway_died")           # the gateway never restarted
    assert len(_events(engine, "fix_gateway_started")) == 1
    journal = await _rows(url, "journal")
    by_exec: dict[str | None, list[dict[str, Any]]] = {}
    for row in journal:
        by_exec.setdefault(row["exec_id"], []).append(row)
    [latin] = by_exec["LATIN-1"]
    assert latin["outcome"] == "accepted" and latin["raw_encoding"] == "latin-1"
    assert b"\x0158=caf\xe9 \xff\xfe\x01" in latin["raw"].encode("latin-1")     # the bytes, exactly
    assert latin["raw_size"] == len(latin["raw"].encode("latin-1")) and not latin["raw_truncated"]
    assert [r["outcome"] for r in by_exec["BIN-\\xff\\xfe"]] == ["accepted", "duplicate"]
    assert all(b"\x0117=BIN-\xff\xfe\x01" in r["raw"].encode("latin-1") for r in by_exec["BIN-\\xff\\xfe"])
    [utf8] = by_exec["UTF8-1"]
    assert utf8["raw_encoding"] == "utf-8" and "58=café\x01" in utf8["raw"]
    for exec_id, seq, size, text in (("BIG-1", seqs[4], BIG, "x"), ("BIG-2", seqs[6], 2_000_000, "y")):
        [big] = by_exec[exec_id]
        assert big["outcome"] == "oversized" and big["raw_truncated"] and big["seq_num"] == seq
        assert big["raw_size"] > size and len(big["raw"]) <= 64 * 1024
        assert f"\x0134={seq}\x01" in big["raw"] and f"\x0158={text * 100}" in big["raw"]
    assert sorted(r["seq_num"] for r in journal if r["outcome"] == "session_reject") == [seqs[4], seqs[6]]
    fills = {f["exec_id"]: f for f in await _rows(url, "fills")}
    assert set(fills) == {"GOOD-1", "LATIN-1", "BIN-\\xff\\xfe", "ACCT-1", "AFTER-1", "UTF8-1", "AFTER-2",
                          "AFTER-3"}
    assert fills["ACCT-1"]["account"] == "ACC\\xff"
    # what quickfix itself keeps of the big message: every copy received, whole (the original and
    # the resend it asked for after discarding it: its CheckSum overflowed)
    logs = list((tmp_path / "engine" / "quickfix" / "log").glob("*-LP1.messages.current.log"))
    [qf_log] = logs
    copies = qf_log.read_bytes().count(b"\x0117=BIG-1\x01")
    print(f"quickfix message log: {qf_log.stat().st_size} bytes, {copies} copies of the 20 MB message")
    assert 1 <= copies <= 3          # 2 here: the original and the one resend quickfix asked for


async def test_a_message_that_kills_the_gateway_twice_is_quarantined(
        tmp_path: Path, engine_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv(CRASH_ON_ENV, "\x0117=POISON-1\x01")   # the gateway dies on this report
    lp_port = free_port()
    url = f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}"
    cfg = write_config(tmp_path / "engine.toml", url, lp_port, None)
    session, app, acceptor = await _lp(lp_port)
    engine = engine_factory(cfg)
    try:
        await asyncio.wait_for(app.logged_on.wait(), 60)
        seqs = await _send(acceptor, session, [("8", er("GOOD-1")), ("8", er("POISON-1")),
                                               ("8", er("AFTER-1"))])
        status = await asyncio.to_thread(engine.wait_for, lambda s: s["executions"] >= 2, 180)
        assert status["poison"] == 1
        assert status["sessions"]["LP1"]["last_seq"] == seqs[-1]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not session.logged_on:
            await asyncio.sleep(0.2)
        [last] = await _send(acceptor, session, [("8", er("AFTER-2"))])      # the session goes on
        status = await asyncio.to_thread(engine.wait_for, lambda s: s["executions"] >= 3, 60)
        assert status["sessions"]["LP1"]["last_seq"] == last
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(m.msg_type == "Q" for m in app.received):
            await asyncio.sleep(0.2)
        assert [(m[17], m[127]) for m in app.received if m.msg_type == "Q"] == [("POISON-1", "Z")]
    finally:
        await asyncio.to_thread(engine.stop)
        await acceptor.stop(logout_wait=0.5)
    # two deaths, then quarantined: a restarted gateway may die before it reports ready
    died = [d["returncode"] for d in _events(engine, "fix_gateway_died")]
    died += [86 for f in _events(engine, "fix_gateway_restart_failed") if "status 86" in f["error"]]
    assert died == [86, 86]
    [quarantined] = _events(engine, "fix_poison_quarantined")
    assert quarantined["seq"] == seqs[1]
    journal = await _rows(url, "journal")
    [poison] = [r for r in journal if r["outcome"] == "poison"]
    assert poison["seq_num"] == seqs[1] and poison["exec_id"] == "POISON-1"
    assert "\x0117=POISON-1\x01" in poison["raw"] and poison["raw"].startswith("8=FIX.4.4\x01")
    fills = {f["exec_id"] for f in await _rows(url, "fills")}
    assert fills == {"GOOD-1", "AFTER-1", "AFTER-2"}
    breaks = [b for b in await _breaks(url) if b["type"] == "poison_message"]
    assert len(breaks) == 1 and breaks[0]["severity"] == "critical"
