"""Absurd quantities and prices through the intake and post-trade, on SQLite and
PostgreSQL: a DontKnowTrade and an amount_limit break, nothing booked, and no
refused price ever becomes a reference price (the intake's, confirm's,
market_prices, margin's)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.config import PROJECT_ROOT
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.fix.gateway import InboundQueue
from adapters.reference import load_reference
from fixsim.fixmsg import md_body
from handlers.intake import Intake
from handlers.posttrade import PostTrade
from stp.fixwire import finish
from stp.inbound import Inbound
from tests.integration.test_engine_intake import Engine

PG_URL = os.environ.get("STP_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REFERENCE = load_reference(PROJECT_ROOT / "config" / "reference")
T0 = 1_893_920_400.0                     # 2030-01-07 08:00 UTC, a Monday: receive times
HUGE_QTY = "1" + "0" * 30                # 1e30
HUGE_PX = "9" + "0" * 49                 # 9e49 (a FIX Price has no exponent)
NORMAL = ("1.08500", "1.08510", "1.08490", "1.08520")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}")
    else:
        database = Database(PG_URL)
        try:
            async with asyncio.timeout(5):
                await database.drop_all()
        except Exception as exc:
            await database.close()
            pytest.skip(f"PostgreSQL not reachable: {exc}")
    await database.migrate()
    yield database
    await database.close()


def er(seq: int, exec_id: str, qty: str = "1000000", px: str = "1.08500", side: str = "1",
       extra: str = "", order_qty: str | None = None) -> str:
    """A complete EUR/USD trade (spot, ACC001) as the LP sends it."""
    body = (f"37=O-{exec_id}\x0111=C-{exec_id}\x011=ACC001\x0117={exec_id}\x01150=F\x0139=2\x01"
            f"55=EUR/USD\x0154={side}\x0138={order_qty or qty}\x0115=EUR\x0132={qty}\x0131={px}\x01"
            f"151=0\x0114={qty}\x0175=20300107\x0160=20300107-08:00:00.000\x0163=0\x0164=20300109\x01{extra}")
    return finish("FIX.4.4", f"35=8\x0134={seq}\x0149=LP1\x0152=20300107-08:00:00.000\x0156=STP\x01"
                  + body).decode()


def snapshot(seq: int, bid: str, offer: str) -> str:
    return finish("FIX.4.4", f"35=W\x0134={seq}\x0149=LP1\x0152=20300107-08:00:00.000\x0156=STP\x01"
                  + md_body("EUR/USD", bid, offer)).decode()


class Harness:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.dk: list[tuple[str, str, str]] = []       # (exec_id, DKReason, text)
        self.bmr: list[str] = []

    async def start(self) -> None:
        def send_dk(session: str, fields: dict[int, str], reason: str, text: str) -> bool:
            self.dk.append((fields.get(17, ""), reason, text))
            return True

        def send_bmr(session: str, fields: dict[int, str], reason: str, text: str) -> bool:
            self.bmr.append(text)
            return True

        self.intake = Intake(InboundQueue(), self.db, await self.db.load_intake_state(), send_dk,
                             known_symbols=REFERENCE.symbols, limits=REFERENCE.amount_limits())
        self.intake.send_business_reject = send_bmr
        self.intake.quote_sessions = frozenset({"LP1"})
        await self.intake.load_reference_prices()
        self.pipeline = PostTrade(PostTradeStore(self.db), REFERENCE, frozenset({"LP1"}), {}, {})
        await self.pipeline.load()
        self.intake.on_committed = self.pipeline.submit
        self.intake.on_quotes = self.pipeline.submit_quotes

    async def send(self, *raws: str, at: float = T0) -> None:
        """Each message a batch of its own, as a live stream arrives; then post-trade."""
        for i, text in enumerate(raws):
            await self.intake.process([Inbound("LP1", text, at + i * 0.001, "app")])
        while not self.pipeline.queue.empty():
            await self.pipeline.process(self.pipeline.queue.get_nowait())

    async def q(self, sql: str) -> list[tuple[Any, ...]]:
        async with self.db.engine.connect() as conn:
            return [tuple(r) for r in (await conn.exec_driver_sql(sql)).all()]

    async def breaks(self) -> list[tuple[str, str]]:
        return sorted((t, k) for t, k in await self.q("SELECT type, keys FROM breaks"))


async def test_absurd_quantity_and_price_get_a_dk_and_a_break_and_never_book(db: Database) -> None:
    """The reported case: LastQty = OrderQty = 1e30 was booked (stop-out); LastPx
    9e49 was refused by booking but became the reference price, so the next four
    normal fills were flagged price_out_of_tolerance."""
    h = Harness(db)
    await h.start()
    await h.send(er(2, "BIG-QTY", qty=HUGE_QTY), er(3, "BIG-PX", px=HUGE_PX),
                 *(er(4 + i, f"N{i}", px=px, side="12"[i % 2]) for i, px in enumerate(NORMAL)))
    # a DontKnowTrade each, with the reasons the reference gives: C quantity, E price
    assert [(e, r) for e, r, _ in h.dk] == [("BIG-QTY", "C"), ("BIG-PX", "E")]
    assert "exceeds the EUR/USD maximum 250000000 EUR" in h.dk[0][2]
    assert "outside the EUR/USD bounds 0.5..2.5" in h.dk[1][2]
    journal = await h.q("SELECT exec_id, outcome, reason FROM journal ORDER BY id")
    assert [(e, o) for e, o, _ in journal] == [("BIG-QTY", "dont_know"), ("BIG-PX", "dont_know")] + [
        (f"N{i}", "accepted") for i in range(4)]
    assert journal[0][2].startswith("DKReason=C: LastQty (32) 1000000000000000000000000000000 EUR")
    # kept in the journal, not a fill, not booked
    assert sorted(e for (e,) in await h.q("SELECT exec_id FROM fills")) == ["N0", "N1", "N2", "N3"]
    booked = await h.q("SELECT fill_exec_id FROM bookings WHERE kind = 'trade'")
    assert sorted(e for (e,) in booked) == ["N0", "N1", "N2", "N3"]
    # two amount_limit breaks, nothing else: the normal fills are not flagged
    breaks = await h.breaks()
    assert [t for t, _ in breaks] == ["amount_limit", "amount_limit"]
    assert {json.loads(k)["exec_id"] for _, k in breaks} == {"BIG-QTY", "BIG-PX"}
    # the reference prices are the normal fills', wherever they are kept
    assert h.intake.reference_prices["EUR/USD"][0] == Decimal("1.08520")
    assert h.pipeline.confirm.validator.reference_price("EUR/USD") == Decimal("1.08520")
    assert h.pipeline.margin.book.prices.price("EUR/USD") == Decimal("1.08520")
    assert await h.q("SELECT symbol FROM market_prices") == []
    # buy, sell, buy, sell of 1,000,000: flat, nowhere near a stop-out
    positions = await h.q("SELECT quantity FROM positions WHERE account = 'ACC001'")
    assert [Decimal(q) for (q,) in positions] == [0]
    assert all(s != "stop_out" for (s,) in await h.q("SELECT state FROM margin_accounts"))


async def test_a_refused_quote_is_not_a_reference_price(db: Database) -> None:
    h = Harness(db)
    await h.start()
    await h.send(snapshot(2, "1.08490", "9" + "0" * 40), snapshot(3, "1.08490", "1.08510"),
                 snapshot(4, "1.30000", "1.30010"), er(5, "N0", px="1.08600"))
    assert len(h.bmr) == 2 and "outside the bounds" in h.bmr[0] and "reference price 1.08500" in h.bmr[1]
    assert await h.q("SELECT bid, offer, price FROM market_prices") == [("1.08490", "1.08510", "1.08500")]
    assert h.dk == [] and h.intake.reference_prices["EUR/USD"][0] == Decimal("1.08600")
    assert await h.breaks() == []


async def test_the_intake_loads_the_reference_prices_at_start(db: Database) -> None:
    h = Harness(db)
    await h.start()
    await h.send(er(2, "N0", px="1.08500"), snapshot(3, "1.08590", "1.08610"))
    # a price stored before the limits existed: not a reference
    async with db.engine.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE market_prices SET price = '3.50000', received_us = received_us + 1")
    again = Harness(db)
    await again.start()
    assert again.intake.reference_prices["EUR/USD"][0] == Decimal("1.08500")     # the fill's
    await again.send(er(4, "FAR", px="1.25000"), at=T0 + 10)    # 15% away from the loaded reference
    assert [(e, r) for e, r, _ in again.dk] == [("FAR", "E")]
    assert "reference price 1.08500" in again.dk[0][2]


async def test_the_reference_prices_after_a_restart_are_those_before_it(db: Database) -> None:
    """At start the reference used to be each pair's last trade, also one
    beyond the tolerance that did not move it live: after a restart the band
    was centred on an off-market price.  The trades after the pair's latest
    quote are replayed as live: the same reference before and after."""
    h = Harness(db)
    await h.start()
    await h.send(er(2, "N0", px="1.08500"), er(3, "OFF", px="1.12000", side="2"))
    assert h.intake.reference_prices["EUR/USD"][0] == Decimal("1.08500")
    again = Harness(db)
    await again.start()
    assert again.intake.reference_prices == h.intake.reference_prices
    # 1.20000: within 10% of 1.12000, 10.6% away from 1.08500
    await again.send(er(4, "FAR", px="1.20000"), at=T0 + 10)
    assert [(e, r) for e, r, _ in again.dk] == [("FAR", "E")]
    assert "reference price 1.08500" in again.dk[0][2]
    # a quote, then a trade within the tolerance of it and one beyond: the quote
    # and the first trade move the reference, the second does not
    await again.send(snapshot(5, "1.09990", "1.10010"), er(6, "N1", px="1.10500"),
                     er(7, "OFF2", px="1.14000"), at=T0 + 20)
    assert again.intake.reference_prices["EUR/USD"][0] == Decimal("1.10500")
    third = Harness(db)
    await third.start()
    assert third.intake.reference_prices == again.intake.reference_prices


async def test_a_fill_beyond_the_tolerance_books_but_moves_no_reference(db: Database) -> None:
    """Within the 10% band but beyond the 2% tolerance: booked (the trade was
    done) and flagged price_out_of_tolerance; no reference moves (the intake's,
    confirm's, margin's mark), so the next normal fill is not flagged.  A fill
    without a client account books on the LP's house account (allocation): a
    trade like any other, its in-tolerance price marks the pair."""
    h = Harness(db)
    await h.start()
    await h.send(er(2, "N0", px="1.08500"), er(3, "OFF", px="1.12000", side="2"))
    assert h.intake.reference_prices["EUR/USD"][0] == Decimal("1.08500")
    assert h.pipeline.confirm.validator.reference_price("EUR/USD") == Decimal("1.08500")
    assert h.pipeline.margin.book.prices.price("EUR/USD") == Decimal("1.08500")
    # an in-tolerance price for an account the engine does not know: booked on
    # the house (unallocated), so it is the market's and marks the pair
    await h.send(er(4, "NOACC", px="1.09000").replace("\x011=ACC001\x01", "\x011=NOPE\x01"))
    assert h.intake.reference_prices["EUR/USD"][0] == Decimal("1.09000")
    assert h.pipeline.margin.book.prices.price("EUR/USD") == Decimal("1.09000")
    await h.send(er(5, "N1", px="1.08510"))
    assert h.dk == []
    booked = sorted(e for (e,) in await h.q("SELECT fill_exec_id FROM bookings"))
    assert booked == ["N0", "N1", "NOACC", "OFF"]
    breaks = [(t, json.loads(k)["exec_id"]) for t, k in await h.breaks()]
    assert sorted(breaks) == [("price_out_of_tolerance", "OFF"), ("unallocated", "NOACC")]
    assert h.intake.reference_prices["EUR/USD"][0] == Decimal("1.08510")
    assert h.pipeline.margin.book.prices.price("EUR/USD") == Decimal("1.08510")


async def test_amounts_beyond_the_database_columns_get_a_dk_not_an_exception(db: Database) -> None:
    """PostgreSQL's fills columns hold 40 characters: a longer LastPx used to fail
    the batch's commit (retried for ever, nothing behind it committed)."""
    h = Harness(db)
    await h.start()
    long_px = "1.0850000000000000000000000000000000000000001"        # 45 characters, in the band
    await h.send(er(2, "N0"), er(3, "LONG", px=long_px), er(4, "FINE", qty="1000000.001",
                                                             order_qty="2000000"),
                 er(5, "N1", px="1.08510"))
    assert [(e, r) for e, r, _ in h.dk] == [("LONG", "Z"), ("FINE", "Z")]
    assert "more than 40 characters" in h.dk[0][2] and "finer than the minor units of EUR" in h.dk[1][2]
    assert sorted(e for (e,) in await h.q("SELECT exec_id FROM fills")) == ["N0", "N1"]
    assert [t for t, _ in await h.breaks()] == ["amount_limit", "amount_limit"]


# --- property: through the intake and post-trade, within the limits books, outside is DK'd ---

_NEAR = st.decimals(min_value=Decimal("0.90000"), max_value=Decimal("1.30000"), places=5)
_PRICES = st.one_of(_NEAR, _NEAR, _NEAR, st.sampled_from([HUGE_PX, "0.00001", "2.60000", "0.40000"]))
_QTYS = st.one_of(st.decimals(min_value=Decimal("1"), max_value=Decimal("300000000"), places=0),
                  st.sampled_from([HUGE_QTY, "250000000", "250000001", "0.01", "1000000.005"]))


def _expected(reports: list[tuple[str, str]]) -> list[str]:
    """What each report must become, from the limits of EUR/USD in pairs.toml:
    bounds 0.5..2.5, band 10% of the reference, max_qty 250,000,000 EUR, cents;
    the reference moves with accepted trades within 2% of it."""
    out: list[str] = []
    ref: Decimal | None = None
    for qty_text, px_text in reports:
        qty, px = Decimal(qty_text), Decimal(px_text)
        in_band = ref is None or abs(px - ref) <= ref * Decimal("0.10")
        if not (Decimal("0.5") <= px <= Decimal("2.5") and in_band):
            out.append("E")
        elif qty > Decimal("250000000"):
            out.append("C")
        elif qty != qty.quantize(Decimal("0.01")) or (qty * px).quantize(Decimal("0.01")) == 0:
            out.append("Z")
        else:
            out.append("booked")
            if ref is None or abs(px - ref) <= ref * Decimal("0.02"):
                ref = px
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports=st.lists(st.tuples(_QTYS.map(str), _PRICES.map(str)), min_size=1, max_size=12))
async def test_property_within_the_limits_books_outside_is_dk(tmp_path_factory: pytest.TempPathFactory,
                                                              reports: list[tuple[str, str]]) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('prop') / 'stp.db'}")
    await db.migrate()
    try:
        h = Harness(db)
        await h.start()
        await h.send(*(er(2 + i, f"P{i}", qty=q, px=p, side="12"[i % 2]) for i, (q, p) in enumerate(reports)))
        expected = _expected(reports)
        dk = {e: r for e, r, _ in h.dk}
        booked = {e for (e,) in await h.q("SELECT fill_exec_id FROM bookings WHERE kind = 'trade'")}
        got = [dk.get(f"P{i}", "booked" if f"P{i}" in booked else "neither") for i in range(len(reports))]
        assert got == expected
        breaks = await h.breaks()
        assert sorted(json.loads(k)["exec_id"] for t, k in breaks if t == "amount_limit") == sorted(dk)
        # nothing refused later on (an exposure_limit or price_out_of_tolerance break may be right)
        assert not [t for t, _ in breaks if t in ("invalid_fill", "rejected_report", "unknown_pair")]
    finally:
        await db.close()


# --- over the wire: the engine process, its quickfix gateway, post-trade in its own process ---


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    started: list[Engine] = []
    yield started
    for e in started:
        if e.proc is not None and e.proc.poll() is None:
            e.proc.kill()
            e.proc.wait()


async def test_over_the_wire_the_lp_gets_dont_know_trades_and_nothing_books(
        tmp_path: Path, engines: list[Engine]) -> None:
    from fixsim.dictionary import load_dictionary
    from fixsim.session import Session, SessionConfig
    from fixsim.store import MemoryStore
    from fixsim.transport import FixAcceptor
    from tests.conftest import free_port
    from tests.integration.test_engine_intake import RecordingApp, write_config
    from tests.integration.test_engine_intake import er as wire_er

    lp_port = free_port()
    url = f"sqlite+aiosqlite:///{tmp_path / 'stp.db'}"
    cfg = write_config(tmp_path / "engine.toml", url, lp_port, None)
    app = RecordingApp()
    session = Session(SessionConfig("FIX.4.4", "LP1", "STP"), app, MemoryStore(),
                      load_dictionary("FIX.4.4"))
    acceptor = FixAcceptor([session], "127.0.0.1", lp_port)
    await acceptor.start()
    engine = Engine(cfg).start()
    engines.append(engine)
    try:
        await asyncio.wait_for(app.logged_on.wait(), 30)
        session.send("8", wire_er("HUGE-QTY", t37="O-HQ", t32=HUGE_QTY, t38=HUGE_QTY, t14=HUGE_QTY))
        session.send("8", wire_er("HUGE-PX", t37="O-HP", t31=HUGE_PX, t6=HUGE_PX))
        for i, px in enumerate(NORMAL):
            session.send("8", wire_er(f"N{i}", t37=f"O-N{i}", t31=px, t6=px, t54="12"[i % 2]))
        conn = acceptor.connection(session)
        assert conn is not None
        conn.flush()
        status = await asyncio.to_thread(engine.wait_for, lambda s: s["journal"] >= 6)
        assert status["executions"] == 4 and status["rejected_by_outcome"]["dont_know"] == 2
        for _ in range(150):
            if len([m for m in app.received if m.msg_type == "Q"]) >= 2:
                break
            await asyncio.sleep(0.2)
        dks = {m[17]: m[127] for m in app.received if m.msg_type == "Q"}
        assert dks == {"HUGE-QTY": "C", "HUGE-PX": "E"}
        db = Database(url)
        try:
            h = Harness(db)
            for _ in range(300):           # post-trade, in the engine's child process, catches up
                if len(await h.q("SELECT booking_id FROM bookings")) >= 4:
                    break
                await asyncio.sleep(0.2)
            booked = sorted(e for (e,) in await h.q("SELECT fill_exec_id FROM bookings"))
            breaks = [(t, json.loads(k)["exec_id"]) for t, k in await h.breaks()]
        finally:
            await db.close()
    finally:
        await asyncio.to_thread(engine.stop)
        await acceptor.stop(logout_wait=0.5)
    assert booked == ["N0", "N1", "N2", "N3"]
    assert sorted(breaks) == [("amount_limit", "HUGE-PX"), ("amount_limit", "HUGE-QTY")]
