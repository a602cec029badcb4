"""End-of-day reconciliation (``handlers.recon``) against the in-memory store:
the engine's fills and nets read from it, the breaks and the run recorded in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.posttrade import PostTrade
from handlers.recon import ReconError, reconcile_positions_file, reconcile_statement_file
from stp.breaks import BreakType
from stp.fills import Side
from tests.unit.fakes import REFERENCE, TRADE_DATE, FakePostTradeStore, make_fill, spot

HEADER = "exec_id,exec_type,symbol,side,last_qty,last_px,trade_date,settl_date,account\n"
POSITIONS = "currency,value_date,lp_pays\n"
VD = spot()


def engine_with_fills() -> FakePostTradeStore:
    store = FakePostTradeStore()
    store.add_fills([make_fill("E1"), make_fill("E2", side=Side.SELL, qty="500000", px="1.1010"),
                     make_fill("E1", session="PLATFORM")])          # another session's: not LP1's
    return store


def line(exec_id: str, side: str, qty: str, px: str) -> str:
    return f"{exec_id},F,EURUSD,{side},{qty},{px},{TRADE_DATE},{VD},ACC001\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def test_a_statement_that_matches_the_engine_gives_no_break(tmp_path: Path) -> None:
    store = engine_with_fills()
    statement = HEADER + line("E1", "BUY", "1000000.00", "1.1") + line("E2", "2", "500000", "1.1010")
    path = write(tmp_path, "lp1.csv", statement)
    report = await reconcile_statement_file(store, REFERENCE, "fxstp", "LP1", path)
    assert (report["matched"], report["breaks"], report["unreadable_lines"]) == (2, 0, [])
    assert store.tables.breaks == {} and store.events() == []
    (run,) = store.tables.recon_runs
    assert (run.kind, run.session, run.lines, run.matched, run.breaks, run.content) == \
        ("statement", "LP1", 2, 2, 0, statement)


async def test_a_price_difference_is_one_break_and_the_same_file_again_the_same_break(tmp_path: Path) -> None:
    store = engine_with_fills()
    path = write(tmp_path, "lp1.csv", HEADER + line("E1", "1", "1000000", "1.1") +
                 line("E2", "2", "500000", "1.1011"))
    report = await reconcile_statement_file(store, REFERENCE, "fxstp", "LP1", path)
    assert (report["matched"], report["breaks"], report["by_type"]) == (1, 1, {"recon_difference": 1})
    (brk,) = store.tables.breaks.values()
    assert brk.brk.type is BreakType.RECON_DIFFERENCE
    assert brk.brk.keys == {"session": "LP1", "exec_id": "E2", "recon": "statement"}
    assert (brk.brk.ours, brk.brk.theirs) == ({"last_px": "1.1010"}, {"last_px": "1.1011"})
    assert brk.cut_off_us is not None                       # it settles on the fill's value date
    assert report["break_ids"] == [brk.brk.break_id]
    again = await reconcile_statement_file(store, REFERENCE, "fxstp", "LP1", path)
    assert again["break_ids"] == report["break_ids"]
    (brk,) = store.tables.breaks.values()
    assert (brk.occurrence, brk.occurrences) == (1, 2)
    assert [e["id"] for e in store.events()] == [brk.brk.break_id] * 2   # consumers drop the repeat
    assert len(store.tables.recon_runs) == 2


async def test_executions_missing_on_either_side_are_breaks(tmp_path: Path) -> None:
    store = engine_with_fills()
    path = write(tmp_path, "lp1.csv", HEADER + line("E1", "1", "1000000", "1.1") +
                 line("E9", "1", "1000000", "1.1"))
    report = await reconcile_statement_file(store, REFERENCE, "fxstp", "LP1", path)
    assert report["by_type"] == {"recon_missing_engine": 1, "recon_missing_lp": 1}
    assert {(b.brk.type, b.brk.keys["exec_id"]) for b in store.tables.breaks.values()} == \
        {(BreakType.RECON_MISSING_ENGINE, "E9"), (BreakType.RECON_MISSING_LP, "E2")}


async def test_an_unreadable_statement_records_nothing(tmp_path: Path) -> None:
    store = engine_with_fills()
    path = write(tmp_path, "lp1.csv", "exec_id,symbol\nE1,EURUSD\n")
    with pytest.raises(ReconError, match="header lacks side, last_qty, last_px"):
        await reconcile_statement_file(store, REFERENCE, "fxstp", "LP1", path)
    assert store.writes == [] and store.tables.recon_runs == []


async def test_a_position_report_against_the_nets(tmp_path: Path) -> None:
    store = FakePostTradeStore()
    pipeline = PostTrade(store, REFERENCE, frozenset({"LP1"}), {}, {})
    await pipeline.load()
    await pipeline.process(store.add_fills([make_fill("E1")]))   # LP1 pays 1M EUR, we pay it 1.1M USD
    same = write(tmp_path, "same.csv", f"{POSITIONS}EUR,{VD},1000000.00\nUSD,{VD},-1100000\n")
    # a currency the report leaves out of a date it covers counts as zero there
    half = write(tmp_path, "half.csv", f"{POSITIONS}EUR,{VD},1000000.00\n")
    report = await reconcile_positions_file(store, REFERENCE, "fxstp", "LP1", same)
    assert (report["matched"], report["breaks"]) == (2, 0)
    report = await reconcile_positions_file(store, REFERENCE, "fxstp", "LP1", half)
    assert (report["matched"], report["by_type"]) == (1, {"position_drift": 1})
    drift = write(tmp_path, "drift.csv", f"{POSITIONS}EUR,{VD},999000.00\nUSD,{VD},-1100000\n")
    report = await reconcile_positions_file(store, REFERENCE, "fxstp", "LP1", drift)
    assert (report["matched"], report["by_type"]) == (1, {"position_drift": 1})
    assert sorted(b.brk.keys["currency"] for b in store.breaks_of(BreakType.POSITION_DRIFT)) == ["EUR", "USD"]
    eur = next(b for b in store.breaks_of(BreakType.POSITION_DRIFT) if b.brk.keys["currency"] == "EUR")
    assert eur.brk.keys == {"counterparty": "LP1", "currency": "EUR", "value_date": VD.isoformat()}
    assert [r.kind for r in store.tables.recon_runs] == ["positions"] * 3
