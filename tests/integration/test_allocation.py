"""Every LP fill books, nets and settles, allocated or not (reference section 13).

The same scenario is sent with and without Account (1) on the LP's reports,
through the intake and the pipeline, on SQLite and PostgreSQL: the nets per
counterparty, currency and value date are the same; without accounts the
client side goes to the LP's house account (``unallocated`` breaks) until the
platform's record or the desk allocates it, which moves the positions and
never the nets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.commands import CommandListener
from adapters.config import PROJECT_ROOT
from adapters.db import inbox as inbox_db
from adapters.db import queries
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.fix.gateway import InboundQueue
from fixsim.fixmsg import er_body
from fixsim.scenario import SimFill
from handlers.intake import Intake
from handlers.posttrade import PostTrade
from stp.allocation import unallocated_break_id
from stp.fixwire import finish
from stp.inbound import Inbound
from tests.integration.test_desk_bus import FakeClient, replies_of
from tests.integration.test_posttrade import (
    REFERENCE,
    active_fills,
    db,
    expected_nets,
    expected_positions,
    q,
    scenario,
)

__all__ = ["db"]       # the fixture (SQLite and PostgreSQL)

HOUSE = "HOUSE-LP1"


def raw(fill: SimFill, seq: int, sender: str, account: bool | str = True) -> str:
    """The report with its Account (1), without it (False) or naming another (a str)."""
    body = er_body(fill)
    if account is not True:
        tag = f"\x011={fill.account}\x01"
        assert body.count(tag) == 1
        body = body.replace(tag, f"\x011={account}\x01" if account else "\x01")
    return finish("FIX.4.4", f"35=8\x0134={seq}\x0149={sender}\x0152=20300107-08:00:00.000\x0156=STP\x01"
                  + body).decode()


allocation = inbox_db.allocate_payload


async def run(db: Database, lp: list[SimFill], platform: list[SimFill], lp_accounts: bool | str,
              house_accounts: dict[str, str] | None = None) -> PostTrade:
    """The fills through the intake (LP reports first, then the platform's)
    and the pipeline, intake batch by intake batch."""
    state = await db.load_intake_state()
    intake = Intake(InboundQueue(), db, state, known_symbols=REFERENCE.symbols)
    key_by_platform = {"PLATFORM": "exec_id"} if platform else {}
    pipeline = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), key_by_platform,
                         {"PLATFORM": "LP1"} if platform else {}, house_accounts=house_accounts)
    await pipeline.load()
    intake.on_committed = pipeline.submit
    now = time.time()
    items = [Inbound("LP1", raw(f, i + 2, "LP1", lp_accounts), now, "app") for i, f in enumerate(lp)]
    items += [Inbound("PLATFORM", raw(f, i + 2, "PLATFORM"), now, "app") for i, f in enumerate(platform)]
    for i in range(0, len(items), 250):
        await intake.process(items[i:i + 250])
        while not pipeline.queue.empty():
            await pipeline.process(pipeline.queue.get_nowait())
    return pipeline


async def nets(db: Database) -> dict[tuple[str, str, date], Decimal]:
    rows = await q(db, "SELECT counterparty, currency, value_date, amount FROM nets")
    return {(cp, c, vd if isinstance(vd, date) else date.fromisoformat(vd)): Decimal(a)
            for cp, c, vd, a in rows if Decimal(a)}


async def positions(db: Database) -> dict[tuple[str, str], Decimal]:
    return {(a, p): Decimal(qty) for a, p, qty in await q(db, "SELECT account, pair, quantity FROM positions")
            if Decimal(qty)}


async def count(db: Database, where: str) -> int:
    return int((await q(db, f"SELECT COUNT(*) FROM breaks WHERE {where}"))[0][0])


async def breaks_by_state(db: Database, type_: str) -> dict[str, int]:
    return {state: int(n) for state, n in await q(
        db, f"SELECT state, COUNT(*) FROM breaks WHERE type = '{type_}' GROUP BY state")}


async def open_unallocated(db: Database) -> set[str]:
    return {r[0] for r in await q(db, "SELECT break_id FROM breaks WHERE type = 'unallocated' "
                                      "AND state = 'open'")}


def house_positions(fills: list[SimFill]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (_, pair), qty in expected_positions(fills).items():
        out[(HOUSE, pair)] += qty
    return {k: v for k, v in out.items() if v}


async def test_nets_without_account_tags_equal_the_nets_with_them(db: Database) -> None:
    events = scenario(500)
    lp = [e.lp for e in events]
    assert any(f.exec_type in ("G", "H") for f in lp)           # cancels and corrections too
    await run(db, lp, [], lp_accounts=True)
    with_accounts = await nets(db)
    assert with_accounts == {k: v for k, v in expected_nets(lp).items() if v}
    assert await positions(db) == {k: v for k, v in expected_positions(lp).items() if v}

    await db.drop_all()
    await db.migrate()
    await run(db, lp, [], lp_accounts=False)
    assert await q(db, "SELECT COUNT(*) FROM fills WHERE account IS NOT NULL") == [(0,)]
    # the money moves with the LP whoever the client is: the same nets, per
    # counterparty, currency and value date
    assert await nets(db) == with_accounts
    for value_date in sorted({k[2] for k in with_accounts})[:2]:
        report = await queries.settlements(db, value_date)
        assert {(r["counterparty"], r["currency"]): Decimal(r["net"]) for r in report if Decimal(r["net"])} \
            == {(k[0], k[1]): v for k, v in with_accounts.items() if k[2] == value_date}
    # the client side is on the house account, like any other account's
    assert await positions(db) == house_positions(lp)
    (margin,) = await q(db, f"SELECT account, currency FROM margin_accounts WHERE account = '{HOUSE}'")
    assert margin == (HOUSE, "USD")
    # one unallocated break open per active fill; those of fills cancelled or
    # corrected since are resolved (or, within the same batch, never raised)
    assert await open_unallocated(db) == {unallocated_break_id("LP1", f.exec_id) for f in active_fills(lp)}
    assert (await breaks_by_state(db, "unallocated")).get("resolved", 0) > 0
    assert await q(db, "SELECT COUNT(*) FROM breaks WHERE type = 'unknown_account'") == [(0,)]
    # every currency's postings still sum to zero
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for ledger, amount in await q(db, "SELECT ledger, amount FROM postings"):
        totals[ledger] += Decimal(amount)
    assert totals and not any(totals.values())


@pytest.mark.parametrize("lp_account", [False, "BROKER-AT-LP1"])
async def test_the_platform_record_allocates_what_the_lp_did_not(db: Database,
                                                                 lp_account: bool | str) -> None:
    """LP reports without accounts (or naming the broker's own account at the
    LP), the platform's records (naming the client) after them: each LP fill
    books on the house, the match confirms it and moves it to the client; the
    nets are those of the fills."""
    events = scenario(400)
    lp = [e.lp for e in events]
    await run(db, lp, [e.platform for e in events], lp_accounts=lp_account)
    assert await q(db, "SELECT state, COUNT(*) FROM confirmations GROUP BY state") == [("confirmed", 800)]
    assert await nets(db) == {k: v for k, v in expected_nets(lp).items() if v}
    assert await positions(db) == {k: v for k, v in expected_positions(lp).items() if v}
    # nothing left on the house, no break left open (those allocated within
    # their own batch were never raised)
    assert all(qty == 0 for (acc, _), qty in (await positions(db)).items() if acc == HOUSE)
    assert "open" not in await breaks_by_state(db, "unallocated")
    assert await q(db, "SELECT type, COUNT(*) FROM breaks GROUP BY type") in (
        [], [("unallocated", (await q(db, "SELECT COUNT(*) FROM breaks"))[0][0])])
    # linked bookings: the house booking reversed, the client's names it and who did it
    rows = await q(db, "SELECT booking_id, account, allocated_from, allocated_by FROM bookings "
                       "WHERE allocated_from IS NOT NULL")
    assert rows
    reversals = {r[0] for r in await q(db, "SELECT reverses FROM bookings WHERE kind = 'reversal'")}
    for booking_id, account, allocated_from, by in rows:
        assert booking_id.startswith("A:LP1:") and account.startswith("ACC")
        assert allocated_from in reversals and by.startswith("match:PLATFORM/")


async def test_allocating_afterwards_moves_positions_and_leaves_the_nets_unchanged(db: Database) -> None:
    events = scenario(300)
    lp = [e.lp for e in events]
    pipeline = await run(db, lp, [], lp_accounts=False)
    before = await nets(db)
    instructions = await q(db, "SELECT instruction_id, amount, state FROM instructions ORDER BY 1")
    active = active_fills(lp)
    first, second = active[0], active[1]
    # refusals: unknown fill, unknown account, a house account, and (below) already allocated
    cancelled = next(f for f in lp if f.exec_type == "F" and f.exec_id not in {a.exec_id for a in active})
    refused = [("nope", "ACC001"), (first.exec_id, "ACC999"), (first.exec_id, HOUSE),
               (cancelled.exec_id, "ACC001")]
    for exec_id, account in refused:
        await inbox_db.enqueue(db, "allocate", allocation("LP1", exec_id, account, "ops1", None))
    await inbox_db.enqueue(db, "allocate", allocation("LP1", first.exec_id, "ACC001", "x" * 81, None))
    await pipeline.tick()
    results = [r[0] for r in await q(db, "SELECT result FROM inbox ORDER BY id")]
    assert [r.split(":")[:2] for r in results] == [
        ["error", " unknown_fill"], ["error", " unknown_account"], ["error", " house_account"],
        ["error", " unknown_fill"], ["error", " who (--by) is longer than 80 characters"]]
    refused.append(("", ""))
    assert await positions(db) == house_positions(lp)

    # the desk allocates every active fill to its client (the second twice in one run)
    for f in active:
        await inbox_db.enqueue(db, "allocate", allocation("LP1", f.exec_id, f.account, "ops1",
                                                                       "per the client's order"))
    await inbox_db.enqueue(db, "allocate", allocation("LP1", second.exec_id, "ACC002", "ops2", None))
    await pipeline.tick()
    await inbox_db.enqueue(db, "allocate", allocation("LP1", first.exec_id, "ACC003", "ops2", None))
    await pipeline.tick()
    results = [r[0] for r in await q(db, "SELECT result FROM inbox ORDER BY id")][len(refused):]
    assert all(r.startswith("allocated LP1/") and r.endswith(" by ops1") for r in results[:len(active)])
    assert [r.split(":")[1] for r in results[len(active):]] == [" already_allocated"] * 2

    assert await positions(db) == {k: v for k, v in expected_positions(lp).items() if v}
    assert await nets(db) == before
    assert await q(db, "SELECT instruction_id, amount, state FROM instructions ORDER BY 1") == instructions
    assert await open_unallocated(db) == set()
    assert await breaks_by_state(db, "unallocated") == {"resolved": await count(db, "type = 'unallocated'")}
    (resolved,) = await q(db, "SELECT resolved_by, resolution FROM breaks WHERE break_id = "
                              f"'{unallocated_break_id('LP1', first.exec_id)}'")
    assert resolved == ("ops1", "per the client's order")
    # margin follows: the client's account has the positions, the house none
    holders = {r[0] for r in await q(db, "SELECT account FROM margin_accounts")}
    assert {f.account for f in active} <= holders
    # a cancel of an allocated fill reverses the client's booking
    (booking,) = await q(db, "SELECT booking_id, account, allocated_from, allocated_by FROM bookings "
                             f"WHERE booking_id = 'A:LP1:{first.exec_id}'")
    assert booking[1:] == (first.account, f"T:LP1:{first.exec_id}", "ops1")
    restarted = PostTrade(PostTradeStore(db), REFERENCE, frozenset({"LP1"}), {}, {})
    await restarted.load()
    assert restarted.net.nets == pipeline.net.nets
    assert {k: p.quantity for k, p in restarted.positions.positions.items()} == \
        {k: p.quantity for k, p in pipeline.positions.positions.items()}


async def test_allocate_on_the_bus_is_idempotent_by_request_id(db: Database) -> None:
    events = scenario(60)
    lp = [e.lp for e in events]
    pipeline = await run(db, lp, [], lp_accounts=False)
    fill = active_fills(lp)[0]
    listener = CommandListener(db, "fxstp")
    client = FakeClient()
    body = {"request_id": "desk-9", "action": "allocate", "session": "LP1", "exec_id": fill.exec_id,
            "account": fill.account, "by": "alice", "reply_to": "fxstp/replies/alice"}
    await listener.handle(client, json.dumps(body).encode())         # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await pipeline.tick()
    (reply,) = await replies_of(db, "desk-9")
    assert reply["data"]["ok"] is True
    result: dict[str, Any] = reply["data"]["result"]
    assert (result["account"], result["from"], result["booking_id"], result["by"]) == \
        (fill.account, HOUSE, f"A:LP1:{fill.exec_id}", "alice")
    # delivered again: nothing applied twice, the same reply
    await listener.handle(client, json.dumps(body).encode())         # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await pipeline.tick()
    assert client.published == [("fxstp/replies/alice", reply)]
    assert await q(db, f"SELECT COUNT(*) FROM bookings WHERE booking_id = 'A:LP1:{fill.exec_id}'") == [(1,)]
    # another request for the same fill: refused as already allocated
    await listener.handle(client, json.dumps({**body, "request_id": "desk-10"}).encode())  # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
    await pipeline.tick()
    (refusal,) = await replies_of(db, "desk-10")
    assert refusal["data"]["ok"] is False and refusal["data"]["error"]["code"] == "already_allocated"
    # a malformed allocation is answered at once
    bad = FakeClient()
    await listener.handle(bad, json.dumps({"action": "allocate", "session": "LP1",  # type: ignore[arg-type]  # FakeClient stands in for aiomqtt's
                                           "exec_id": fill.exec_id, "by": "alice"}).encode())
    ((_, answer),) = bad.published
    error = answer["data"]["error"]
    assert error["code"] == "invalid_command" and "account" in error["message"]


async def test_a_configured_house_account_and_an_lp_naming_it(db: Database) -> None:
    """``house_account`` per LP: an LP naming the broker's account at the LP
    (configured as the house account) books there, unallocated."""
    events = scenario(80)
    lp = [e.lp for e in events]
    for f in lp:
        f.account = "ACC020"
    pipeline = await run(db, lp, [], lp_accounts=True, house_accounts={"LP1": "ACC020"})
    assert pipeline.houses.of("LP1") == "ACC020"
    assert {a for a, _ in await positions(db)} == {"ACC020"}
    assert await open_unallocated(db) == {unallocated_break_id("LP1", f.exec_id) for f in active_fills(lp)}


async def test_allocate_from_the_command_line(db: Database, tmp_path: Path) -> None:
    """``run_engine.py allocate`` queues the allocation in the inbox (with who);
    the engine applies it."""
    events = scenario(40)
    lp = [e.lp for e in events]
    pipeline = await run(db, lp, [], lp_accounts=False)
    fill = active_fills(lp)[0]
    url = db.engine.url.render_as_string(hide_password=False)
    cfg = tmp_path / "engine.toml"
    cfg.write_text(f'[database]\nurl = "{url}"\n[mqtt]\nenabled = false\n'
                   '[[lp]]\nname = "LP1"\nhost = "127.0.0.1"\nport = 1\nsender_comp_id = "STP"\n'
                   'target_comp_id = "LP1"\n')

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(PROJECT_ROOT / "run_engine.py"), "--log-level", "error",
                               "allocate", "--config", str(cfg), *args],
                              capture_output=True, text=True, timeout=120, check=False)

    done = cli("--session", "LP1", "--exec-id", fill.exec_id, "--account", fill.account, "--by", "ops7",
               "--reason", "client confirmed")
    assert done.returncode == 0, done.stderr
    queued = json.loads(done.stdout)
    assert (queued["exec_id"], queued["account"], queued["by"]) == (fill.exec_id, fill.account, "ops7")
    refused = cli("--session", "LP9", "--exec-id", fill.exec_id, "--account", fill.account, "--by", "ops7")
    assert refused.returncode == 2 and "no [[lp]] session named LP9" in refused.stderr
    await pipeline.tick()
    ((result,),) = await q(db, "SELECT result FROM inbox")
    assert result == f"allocated LP1/{fill.exec_id} from {HOUSE} to {fill.account} by ops7"
    (row,) = await q(db, "SELECT account, allocated_by FROM bookings "
                         f"WHERE booking_id = 'A:LP1:{fill.exec_id}'")
    assert row == (fill.account, "ops7")
