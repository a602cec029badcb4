#!/usr/bin/env python3
"""The CPU budget of a fill on this machine, part by part, against the targets.

Runs the benchmarks that measure each part alone, one after the other, and
adds up their CPU per fill:

- the LP simulator streaming ExecutionReports (bench/sim_stream.py: CPU of
  the simulator process per report while it streams to a lean peer);
- the FIX gateway: quickfix receiving, validating and handing each message
  over the pipe (bench/quickfix_ceiling.py, ``gateway``: CPU of the gateway
  process per message), and the engine's side decoding it;
- the intake and post-trade in the engine (bench/inprocess.py: CPU per fill,
  the database driver's thread included, no FIX);

then prints, for the intake path (simulator -> journal, issue 3) and the
whole pipeline (issue 4), the CPU a fill costs, the cores a target rate
needs at that cost, and the most this machine could do if every core were
busy all the time with no waiting (an upper bound: the measured end-to-end
rates in bench/intake.py and bench/pipeline.py are below it).

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
TARGETS = {"intake": 30_000, "pipeline": 25_000}


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
    engine = lines[-1]
    lean = sim["lean_peer"]
    assert isinstance(lean, dict)
    parts = {
        "simulator_us": float(lean["sender_cpu_us_per_er"]),
        "gateway_us": float(gateway["gateway_cpu_us_per_message"]),
        "engine_side_of_pipe_us": float(gateway["engine_side_cpu_us_per_message"]),
        "intake_us": float(engine["intake_cpu_us_per_fill"]),  # type: ignore[arg-type]  # inprocess.py prints a number there
        "posttrade_us": float(engine["posttrade_cpu_us_per_fill"]),  # type: ignore[arg-type]  # inprocess.py prints a number there
    }
    cores = os.cpu_count() or 1
    intake_path = parts["simulator_us"] + parts["gateway_us"] + parts["engine_side_of_pipe_us"] + \
        parts["intake_us"]
    pipeline = intake_path + parts["posttrade_us"]
    result: dict[str, object] = {
        "count": args.count, "cores": cores, "raw_parse_per_s": lines[0].get("raw_parse_per_s"),
        "parts_cpu_per_fill": parts,
        "for_reference": {"quickfix_count_only_us": count_only["process_cpu_us_per_message"],
                          "simulator_alone_per_s": sim["lp_simulator_rate_per_s"],
                          "gateway_alone_per_s": gateway["per_s"]},
    }
    for name, per_fill in (("intake", intake_path), ("pipeline", pipeline)):
        target = TARGETS[name]
        result[name] = {"cpu_us_per_fill": round(per_fill, 1),
                        "cores_needed_at_target": round(target * per_fill / 1e6, 2),
                        "target_per_s": target,
                        "upper_bound_per_s_all_cores_busy": round(cores / per_fill * 1e6)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
