#!/usr/bin/env python3
"""The CPU a fill costs, part by part, against issue 13's targets.

Runs the benchmarks that measure each part alone, one after the other:

- the LP simulator streaming ExecutionReports (bench/sim_stream.py: CPU of
  the simulator process per report while it streams to a lean peer);
- the FIX gateway: quickfix receiving, validating and handing each message
  over the pipe (bench/quickfix_ceiling.py, ``gateway``: CPU of the gateway
  process per message), and quickfix alone counting the same messages
  (``count``, its message log on, as the gateway runs it);
- the intake and post-trade in the engine (bench/inprocess.py: CPU per fill,
  the database driver's thread included, no FIX), and the bare split of the
  same ExecutionReports into a dict in the same process (the baseline).

It prints each part's CPU per fill and the ratios the targets are stated
in: the engine's work (intake + post-trade) against the bare split (target
at most 8x), the gateway against quickfix counting alone (at most 1.3x).
A throughput on this two-core machine would measure the machine: these are
costs per fill, each against a baseline measured in the same run.

    python bench/budget.py --count 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_TARGET = 8.0        # (intake + post-trade) / bare split, at most
GATEWAY_TARGET = 1.3       # gateway / quickfix counting alone, at most


def run(script: str, *args: str) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=3600).stdout
    text = out.strip()
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100_000)
    args = ap.parse_args()
    count = str(args.count)
    [sim] = run("sim_stream.py", "--count", count)
    [ceiling] = run("quickfix_ceiling.py", "--count", count)
    lines = run("inprocess.py", "--count", count, "--every", count)
    runs = ceiling["runs"]
    assert isinstance(runs, list)
    gateway = next(r for r in runs if r["mode"] == "gateway")
    count_only = next(r for r in runs if r["mode"] == "count" and r["message_log"])
    engine = next(line for line in reversed(lines) if "intake_cpu_us_per_fill" in line)
    baseline = float(next(line for line in lines if "baseline_split_us" in line)["baseline_split_us"])  # type: ignore[arg-type]  # inprocess.py prints a number there
    lean = sim["lean_peer"]
    assert isinstance(lean, dict)
    parts = {
        "intake_us": float(engine["intake_cpu_us_per_fill"]),  # type: ignore[arg-type]  # inprocess.py prints a number there
        "posttrade_us": float(engine["posttrade_cpu_us_per_fill"]),  # type: ignore[arg-type]  # inprocess.py prints a number there
        "gateway_us": float(gateway["gateway_cpu_us_per_message"]),
        "quickfix_count_only_us": float(count_only["process_cpu_us_per_message"]),
        "engine_side_of_pipe_us": float(gateway["engine_side_cpu_us_per_message"]),
        "simulator_us": float(lean["sender_cpu_us_per_er"]),
    }
    engine_us = parts["intake_us"] + parts["posttrade_us"]
    result: dict[str, object] = {
        "count": args.count, "cores": os.cpu_count() or 1,
        "baseline_split_us": baseline,
        "parts_cpu_per_fill": parts,
        "ratios": {
            "engine_to_split": round(engine_us / baseline, 1),
            "intake_to_split": round(parts["intake_us"] / baseline, 1),
            "posttrade_to_split": round(parts["posttrade_us"] / baseline, 1),
            "gateway_to_quickfix_count_only": round(parts["gateway_us"] / parts["quickfix_count_only_us"], 2),
        },
        "targets": {"engine_to_split_at_most": ENGINE_TARGET,
                    "gateway_to_quickfix_count_only_at_most": GATEWAY_TARGET},
        "met": {"engine": engine_us / baseline <= ENGINE_TARGET,
                "gateway": parts["gateway_us"] / parts["quickfix_count_only_us"] <= GATEWAY_TARGET},
        "for_reference": {"engine_us_per_fill": round(engine_us, 1),
                          "simulator_alone_per_s": sim["lp_simulator_rate_per_s"],
                          "gateway_alone_per_s": gateway["per_s"]},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
