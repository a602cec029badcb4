"""The LP simulator's end-of-day trade statement (CSV, the format
``stp.reconcile`` reads): every execution the LP reports in a scenario, as it
reports it, in ExecID order of sending.  The scenario is deterministic, so
the statement of a simulator run is produced from the same options, without
the run.  Content faults show as the LP sent them (a missing_lp fill is not
on it; an ExecID reused with other content is listed twice).
"""

from __future__ import annotations

import csv
from typing import TextIO

from fixsim.scenario import Scenario

COLUMNS = ("exec_id", "exec_type", "exec_ref_id", "order_id", "account", "trade_date", "symbol", "side",
           "last_qty", "last_px", "currency", "settl_date")


def write_statement(scenario: Scenario, out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    lines = 0
    for event in scenario.events():
        f = event.lp
        if f is None:
            continue
        writer.writerow((f.exec_id, f.exec_type, f.exec_ref_id or "", f.order_id, f.account,
                         f.trade_date.isoformat(), f.symbol, f.side, f.last_qty, f.last_px, f.currency,
                         f.settl_date.isoformat()))
        lines += 1
    return lines
