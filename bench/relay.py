#!/usr/bin/env python3
"""Outbox relay benchmark: breaks from detection to the broker's PUBACK.

Issue 5's target: the outbox relay keeps up with at least 5% of fills
breaking at the pipeline's full speed (25,000 fills/s, so 1,250 breaks/s),
with p99 detection-to-PUBACK under 100 ms.  Everything runs in this process
(except the broker and the optional checking subscriber), each phase on a
fresh database (a temporary SQLite file by default; ``--database-url`` for
PostgreSQL, whose schema is dropped and migrated first):

1. ``baseline``: a bare aiomqtt publish loop, no database: the same payloads
   (real break events), QoS 1, ``--window`` publishes gathered at a time as
   the relay does, the same client options -> messages/s acknowledged.  Two
   variants beside it show the headroom: paho's in-flight limit raised to the
   window (``inflight=W``) and a sliding window instead of gather-and-wait
   (``sliding``).
2. ``max``: ``--count`` distinct MISMATCH breaks go through ``BreakSink.add``
   into a ``BatchChanges`` and ``PostTradeStore.write``, ``--per-commit``
   per transaction, as fast as the database takes them, with the real
   ``OutboxRelay`` running concurrently and its ``wakeup`` set after each
   commit (as the post-trade stage does) -> breaks/s from the first detection
   to the last PUBACK.
3. ``paced``: breaks offered at ``--rate`` for ``--seconds``, one transaction
   every ``--tick`` seconds -> detection-to-PUBACK latency of every event
   (detection: the stamp taken just before its transaction; PUBACK: when the
   relay's ``publish`` for it returned; also to when the relay's mark
   committed), the outbox backlog during and at the end.

The relay is the real one, subclassed only to observe: its client's
``publish`` is wrapped to stamp every return (PUBACK at QoS 1), ``_mark`` and
the outbox reads are timed.  At the end of each relay phase: every outbox row
has ``published_us``, the relay published every event exactly once, and a
subscriber in its own process (QoS 1, ``--no-subscriber`` to leave it out)
received every event id.  Figures only, no assertions on timing.

    python bench/relay.py
    python bench/relay.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python bench/relay.py --private-broker --broker-nodelay --rate 2500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from adapters.db.posttrade import PostTradeStore  # noqa: E402
from adapters.db.repository import Database, now_us  # noqa: E402
from adapters.logs import configure  # noqa: E402
from adapters.mqtt import MqttSettings, OutboxRelay  # noqa: E402
from handlers.breaks import BreakSink  # noqa: E402
from stp.breaks import Break, BreakType  # noqa: E402
from stp.changes import BatchChanges  # noqa: E402
from stp.events import break_detected  # noqa: E402

TARGET_PER_S = 1250.0      # 5% of 25,000 fills/s
TARGET_P99_MS = 100.0
PAIRS = (("EURUSD", 1.0845, 4), ("GBPUSD", 1.2710, 4), ("USDJPY", 151.32, 2), ("AUDUSD", 0.6581, 4),
         ("USDCHF", 0.8843, 4), ("EURGBP", 0.8532, 4), ("USDCAD", 1.3604, 4), ("NZDUSD", 0.6102, 4))
ACCOUNTS = tuple(f"ACC{i:04d}" for i in range(1, 41))
LP_SESSIONS = ("LP1", "LP2", "LP3")
PLATFORM_SESSIONS = ("PLAT1", "PLAT2")


# -- breaks like the matcher's ---------------------------------------------------
def make_breaks(n: int, tag: str, seed: int) -> list[Break]:
    """Distinct MISMATCH breaks shaped like ``stp.confirm._mismatch_break``'s."""
    rng = random.Random(seed)
    out: list[Break] = []
    for i in range(n):
        lp, platform = rng.choice(LP_SESSIONS), rng.choice(PLATFORM_SESSIONS)
        exec_id, platform_exec_id = f"{tag}E{i:09d}", f"{tag}P{i:09d}"
        symbol, mid, digits = rng.choice(PAIRS)
        px = round(mid * (1 + rng.uniform(-0.002, 0.002)), digits)
        qty = rng.choice((100_000, 250_000, 500_000, 1_000_000, 2_000_000, 5_000_000))
        ours: dict[str, Any] = {}
        theirs: dict[str, Any] = {}
        for name in sorted(rng.sample(("last_px", "last_qty", "side", "settl_date", "account"),
                                      rng.randint(1, 3))):
            if name == "last_px":
                theirs[name], ours[name] = f"{px:.{digits}f}", f"{px + 10 ** -digits:.{digits}f}"
            elif name == "last_qty":
                theirs[name], ours[name] = str(qty), str(qty + rng.choice((1000, 10_000, -5000)))
            elif name == "side":
                theirs[name], ours[name] = rng.choice((("buy", "sell"), ("sell", "buy")))
            elif name == "settl_date":
                theirs[name], ours[name] = "2026-11-20", "2026-11-23"
            else:
                theirs[name], ours[name] = rng.choice(ACCOUNTS), rng.choice(ACCOUNTS)
        diffs = "; ".join(f"{k} LP {theirs[k]} platform {ours[k]}" for k in theirs)
        keys = {"session": lp, "exec_id": exec_id, "platform_session": platform,
                "platform_exec_id": platform_exec_id}
        out.append(Break(BreakType.MISMATCH, keys,
                         f"{lp} {exec_id} vs {platform} {platform_exec_id} (trade) {symbol}: {diffs}",
                         ours=ours, theirs=theirs))
    return out


# -- the relay, observed -----------------------------------------------------------
class TimedStore(PostTradeStore):
    """Times the relay's outbox reads."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reads = 0
        self.empty_reads = 0
        self.read_s = 0.0
        self.read_max_s = 0.0

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        t = time.perf_counter()
        rows = await super().fetch(sql, params)
        if sql.startswith("SELECT id, topic"):
            self.reads += 1
            self.empty_reads += not rows
            took = time.perf_counter() - t
            self.read_s += took
            self.read_max_s = max(self.read_max_s, took)
        return rows


class TimedRelay(OutboxRelay):
    """The real relay; it only records when each publish returned (PUBACK) and
    when each mark committed."""

    def __init__(self, db: Database, settings: MqttSettings, wakeup: asyncio.Event, batch: int,
                 window: int) -> None:
        super().__init__(db, settings, wakeup=wakeup, batch=batch, window=window)
        self.store = self.timed = TimedStore(db)
        self.acks: list[tuple[Any, int, int]] = []     # (payload, publish called, returned), wall µs
        self.marked_us: dict[int, int] = {}            # outbox id -> its mark committed
        self.marks = 0
        self.mark_s = 0.0
        self.mark_max_s = 0.0
        self.progress = asyncio.Event()

    def _client(self) -> aiomqtt.Client:
        client = super()._client()
        publish = client.publish
        acks = self.acks

        async def stamped(topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> None:
            called = now_us()
            await publish(topic, payload, *args, **kwargs)
            acks.append((payload, called, now_us()))

        client.publish = stamped  # type: ignore[method-assign]  # stamped wraps the client's publish
        return client

    async def _mark(self, ids: list[int]) -> None:
        t = time.perf_counter()
        await super()._mark(ids)
        took = time.perf_counter() - t
        self.mark_s += took
        self.mark_max_s = max(self.mark_max_s, took)
        self.marks += 1
        done = now_us()
        for i in ids:
            self.marked_us[i] = done
        self.progress.set()

    def ack_times(self, wanted: set[str]) -> tuple[dict[str, int], dict[str, int], Counter[str]]:
        """Per event id: first PUBACK, publish-call-to-PUBACK µs, and how often it was published."""
        acked: dict[str, int] = {}
        service: dict[str, int] = {}
        times: Counter[str] = Counter()
        for payload, called, returned in self.acks:
            text = payload.decode() if isinstance(payload, bytes) else str(payload)
            event_id = str(json.loads(text).get("id"))
            if event_id in wanted:
                times[event_id] += 1
                acked.setdefault(event_id, returned)
                service.setdefault(event_id, returned - called)
        return acked, service, times


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


WARNINGS = Counting()     # aiomqtt's warnings (to the standard library's "mqtt" logger)
GC_PAUSES: list[tuple[int, float]] = []    # (generation, ms) of every collection, once main starts
_gc_started = [0.0]


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        GC_PAUSES.append((int(info["generation"]), (time.perf_counter() - _gc_started[0]) * 1e3))


# -- helpers -------------------------------------------------------------------------
def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def latency_ms(us: list[int]) -> dict[str, float]:
    s = sorted(v / 1000 for v in us)
    return {"p50_ms": round(pct(s, 0.50), 2), "p95_ms": round(pct(s, 0.95), 2),
            "p99_ms": round(pct(s, 0.99), 2), "max_ms": round(s[-1], 2) if s else math.nan}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def fresh_db(url: str | None, tmp: Path, name: str) -> AsyncIterator[Database]:
    """An empty, migrated database for one phase, closed when the phase ends."""
    async with Database(f"sqlite+aiosqlite:///{tmp / name}.db" if url is None else url) as db:
        if url is not None:
            await db.drop_all()
        await db.migrate()
        yield db


class Broker:
    """A private Mosquitto on a free port (``--private-broker``)."""

    def __init__(self, tmp: Path, nodelay: bool) -> None:
        self.port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        + ("set_tcp_nodelay true\n" if nodelay else ""))
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- checking subscriber (its own process) --------------------------------------------
async def subscriber_main(host: str, port: int, topic: str) -> None:
    """Subscribe at QoS 1; after ``ready``, read the expected count from stdin,
    then print the event ids received once that many arrived or after 2 s of quiet."""
    ids: list[str] = []
    last = [time.monotonic()]
    async with aiomqtt.Client(host, port, identifier=f"relay-bench-sub-{os.getpid()}",
                              keepalive=30, timeout=10) as client:
        await client.subscribe(topic, qos=1)

        async def consume() -> None:
            async for message in client.messages:
                if isinstance(message.payload, bytes | str):
                    ids.append(str(json.loads(message.payload).get("id")))
                    last[0] = time.monotonic()

        task = asyncio.create_task(consume())
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        expected = int((await loop.run_in_executor(None, sys.stdin.readline)).strip() or 0)
        while len(ids) < expected and time.monotonic() - last[0] < 2.0:
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    print(json.dumps({"ids": ids}), flush=True)


class Subscriber:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, host: str, port: int, topic: str) -> Subscriber:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--subscriber", host, str(port), topic,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2 ** 26)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"subscriber did not start: {line!r}")
        return cls(proc)

    async def check(self, expected: set[str]) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{len(expected)}\n".encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        await self.proc.wait()
        ids = Counter(json.loads(line)["ids"]) if line else Counter[str]()
        return {"received": sum(ids.values()), "missing": len(expected - set(ids)),
                "repeats": sum(n - 1 for n in ids.values() if n > 1),
                "unexpected": len(set(ids) - expected)}


# -- phase 1: bare aiomqtt ------------------------------------------------------------
async def baseline(host: str, port: int, events: list[tuple[str, str]], window: int, sliding: bool,
                   inflight: int | None) -> dict[str, object]:
    async with aiomqtt.Client(host, port, identifier=f"relay-bench-base-{os.getpid()}", keepalive=30,
                              timeout=10, max_inflight_messages=inflight) as client:
        await client.publish(events[0][0], events[0][1], qos=1)      # connection warm
        t0 = time.perf_counter()
        if sliding:
            it = iter(events)

            async def worker() -> None:
                for topic, payload in it:
                    await client.publish(topic, payload, qos=1, timeout=10.0)

            await asyncio.gather(*(worker() for _ in range(window)))
        else:
            for i in range(0, len(events), window):
                await asyncio.gather(*(client.publish(t, p, qos=1, timeout=10.0)
                                       for t, p in events[i:i + window]))
        seconds = time.perf_counter() - t0
    return {"messages": len(events), "seconds": round(seconds, 3),
            "acked_per_s": round(len(events) / seconds, 1)}


# -- phases 2 and 3: the engine's write path and the real relay -------------------------
class Phase:
    def __init__(self, db: Database, args: argparse.Namespace, name: str, host: str, port: int) -> None:
        self.db = db
        self.store = PostTradeStore(db)
        self.prefix = f"bench-relay-{os.getpid()}-{name}"
        self.sink = BreakSink(self.prefix)
        self.wakeup = asyncio.Event()
        settings = MqttSettings(host=host, port=port, topic_prefix=self.prefix,
                                client_id=f"relay-bench-{os.getpid()}-{name}")
        self.relay = TimedRelay(db, settings, self.wakeup, args.relay_batch, args.window)
        self.committed = 0
        self.commits = 0
        self.commit_s = 0.0
        self.commit_max_s = 0.0
        self.batches: list[tuple[Sequence[Break], int]] = []   # (breaks, their commit returned)
        self.cpu = (0.0, 0.0)           # process CPU seconds when offering began, when drained
        self.warnings0 = WARNINGS.count
        self.gc = (0, 0)                # GC_PAUSES indexes, the same interval
        self.relay.stop_timeout = 15.0        # ``async with phase.relay``: the drain it is given

    async def offer(self, breaks: Sequence[Break]) -> int:
        """One post-trade transaction with these breaks; the detection stamp."""
        w = BatchChanges()
        stamp = now_us()
        t = time.perf_counter()
        for brk in breaks:
            self.sink.add(brk, w, stamp)
        await self.store.write(w)
        self.wakeup.set()
        self.batches.append((breaks, now_us()))
        took = time.perf_counter() - t
        self.commit_s += took
        self.commit_max_s = max(self.commit_max_s, took)
        self.committed += len(breaks)
        self.commits += 1
        return stamp

    async def drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.relay.published < self.committed:
            self.relay.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.relay.progress.wait(), max(0.01, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return self.relay.published >= self.committed
        return True

    async def verify(self, ids: set[str]) -> tuple[dict[str, object], dict[str, int], dict[str, int],
                                                   dict[str, int]]:
        """Outbox rows, exactly-once from the relay's side; per event: detection,
        PUBACK, mark committed (wall µs)."""
        rows = await self.store.fetch("SELECT id, event_id, created_us, published_us FROM outbox")
        detected = {str(r[1]): int(r[2]) for r in rows}
        marked = {str(r[1]): self.relay.marked_us.get(int(r[0]), 0) for r in rows}
        acked, service, times = self.relay.ack_times(ids)
        check: dict[str, object] = {
            "outbox_rows": len(rows), "unpublished_rows": sum(r[3] is None for r in rows),
            "distinct_event_ids": len(detected), "relay_published": self.relay.published,
            "events_published_once": sum(1 for e in ids if times.get(e) == 1),
            "events_republished": sum(1 for n in times.values() if n > 1),
            "events_never_acked": len(ids - set(acked))}
        check["exactly_once"] = (len(rows) == len(ids) == check["events_published_once"]
                                 and check["unpublished_rows"] == 0 and self.relay.published == len(ids))
        check["publish_call_to_puback"] = latency_ms(list(service.values()))
        return check, detected, acked, marked

    def internals(self, seconds: float) -> dict[str, object]:
        """Where the relay's time went over ``seconds`` (first detection to last
        PUBACK), the producer's commits, this process's CPU over the phase."""
        r, s = self.relay, self.relay.timed
        gen2 = [ms for g, ms in GC_PAUSES[self.gc[0]:self.gc[1]] if g == 2]
        return {"outbox_reads": s.reads, "empty_reads": s.empty_reads,
                "read_ms_avg": round(s.read_s / max(s.reads, 1) * 1e3, 2),
                "read_ms_max": round(s.read_max_s * 1e3, 1),
                "marks": r.marks, "mark_ms_avg": round(r.mark_s / max(r.marks, 1) * 1e3, 2),
                "mark_ms_max": round(r.mark_max_s * 1e3, 1),
                "read_share": round(s.read_s / seconds, 3) if seconds > 0 else None,
                "mark_share": round(r.mark_s / seconds, 3) if seconds > 0 else None,
                "producer_commit_ms_avg": round(self.commit_s / max(self.commits, 1) * 1e3, 2),
                "producer_commit_ms_max": round(self.commit_max_s * 1e3, 1),
                "process_cpu_share": round((self.cpu[1] - self.cpu[0]) / seconds, 2) if seconds > 0 else None,
                "aiomqtt_warnings": WARNINGS.count - self.warnings0,
                "gc_gen2_collections": len(gen2),
                "gc_gen2_ms_max": round(max(gen2, default=0.0), 1)}


def chunks(items: Sequence[Break], size: int) -> Iterator[Sequence[Break]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def with_phase(args: argparse.Namespace, tmp: Path, name: str, host: str, port: int,
                     breaks: list[Break], body: Callable[[Phase], Any]) -> dict[str, object]:
    async with fresh_db(args.database_url, tmp, name) as db:
        phase = Phase(db, args, name, host, port)
        sub = None
        try:
            if args.subscriber:
                sub = await Subscriber.start(host, port, f"{phase.prefix}/breaks/#")
            async with phase.relay:             # stopped (published, offline said) however this ends
                await asyncio.wait_for(phase.relay.connected.wait(), 15)
                cpu0, gc0 = time.process_time(), len(GC_PAUSES)
                result: dict[str, object] = await body(phase)
                if not await phase.drained(args.timeout):
                    result["timed_out"] = True
                phase.cpu, phase.gc = (cpu0, time.process_time()), (gc0, len(GC_PAUSES))
            ids = {b.break_id for b in breaks}
            check, detected, acked, marked = await phase.verify(ids)
            first = min(detected.values())
            last_ack = max(acked.values()) if acked else first
            span = (last_ack - first) / 1e6
            result["breaks"] = len(ids)
            result["breaks_per_s_detect_to_puback"] = round(len(ids) / span, 1) if span > 0 else None
            result["detect_to_puback"] = latency_ms([acked[e] - detected[e] for e in acked])
            result["detect_to_marked"] = latency_ms([marked[e] - detected[e] for e in detected if marked[e]])
            committed = {b.break_id: at for batch, at in phase.batches for b in batch}
            result["detect_to_committed"] = latency_ms([committed[e] - detected[e] for e in committed])
            result["committed_to_puback"] = latency_ms([acked[e] - committed[e] for e in acked
                                                        if e in committed])
            result["drain_ms_after_last_detection"] = round((last_ack - max(detected.values())) / 1000, 1)
            result["relay"] = phase.internals(span)
            result["check"] = check
            if sub is not None:
                result["subscriber"] = await sub.check(ids)
                sub = None
        finally:
            if sub is not None:
                sub.proc.kill()
                await sub.proc.wait()
    return result


async def max_phase(phase: Phase, breaks: list[Break], per_commit: int) -> dict[str, object]:
    t0 = time.perf_counter()
    for batch in chunks(breaks, per_commit):
        await phase.offer(batch)
    seconds = time.perf_counter() - t0
    return {"commits": math.ceil(len(breaks) / per_commit),
            "committed_per_s": round(len(breaks) / seconds, 1)}


async def paced_phase(phase: Phase, breaks: list[Break], rate: float, tick: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    total = len(breaks)
    sent = commits = late_ticks = 0
    backlog_max = 0
    t0 = loop.time()
    k = 0
    while sent < total:
        k += 1
        at = t0 + k * tick
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -tick:
            late_ticks += 1
        due = min(total, int(rate * (loop.time() - t0)))
        if due <= sent:
            continue
        backlog_max = max(backlog_max, phase.committed - phase.relay.published)
        await phase.offer(breaks[sent:due])
        sent, commits = due, commits + 1
    offered_s = loop.time() - t0
    backlog_end = phase.committed - phase.relay.published
    unpublished_end = await phase.relay.pending()
    return {"offered_per_s": round(rate, 1), "achieved_offer_per_s": round(total / offered_s, 1),
            "commits": commits, "late_ticks": late_ticks, "backlog_max": backlog_max,
            "backlog_at_end": backlog_end, "outbox_unpublished_at_end": unpublished_end,
            "kept_up": backlog_end <= max(2 * rate * tick, phase.relay.window)}


async def clear_retained(host: str, port: int, topics: list[str]) -> None:
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, identifier=f"relay-bench-clean-{os.getpid()}") as client:
            for topic in topics:
                await client.publish(topic, b"", qos=1, retain=True)


# -- main ---------------------------------------------------------------------------------
async def run(args: argparse.Namespace, host: str, port: int, tmp: Path) -> dict[str, object]:
    sample = make_breaks(args.baseline_count, "B", args.seed + 1)
    at = datetime.now(UTC)
    events = [(e.topic, e.payload) for e in (break_detected(b, f"bench-relay-{os.getpid()}-base", at)
                                             for b in sample)]
    sizes = sorted(len(p.encode()) for _, p in events)
    result: dict[str, object] = {
        "database": "postgresql" if args.database_url else "sqlite", "broker": f"{host}:{port}",
        "window": args.window, "relay_batch": args.relay_batch, "per_commit": args.per_commit,
        "payload_bytes": {"min": sizes[0], "p50": int(pct(sizes, 0.5)), "max": sizes[-1]}}
    base: dict[str, object] = {}
    base["relay_like"] = await baseline(host, port, events, args.window, False, None)
    base[f"inflight={args.window}"] = await baseline(host, port, events, args.window, False, args.window)
    base[f"sliding,inflight={args.window}"] = await baseline(host, port, events, args.window, True,
                                                            args.window)
    result["baseline"] = base
    prefixes: list[str] = []
    try:
        breaks = make_breaks(args.count, "M", args.seed)

        async def body_max(phase: Phase) -> dict[str, object]:
            prefixes.append(phase.prefix)
            return await max_phase(phase, breaks, args.per_commit)

        result["max"] = await with_phase(args, tmp, "max", host, port, breaks, body_max)
        paced = make_breaks(int(args.rate * args.seconds), "P", args.seed + 2)

        async def body_paced(phase: Phase) -> dict[str, object]:
            prefixes.append(phase.prefix)
            return await paced_phase(phase, paced, args.rate, args.tick)

        result["paced"] = await with_phase(args, tmp, "paced", host, port, paced, body_paced)
    finally:
        await clear_retained(host, port, [f"{p}/status" for p in prefixes])
    return result


def table(r: dict[str, Any]) -> str:
    lines = [f"{'phase':<34}{'msgs':>8}{'per_s':>10}{'p50_ms':>9}{'p95_ms':>9}{'p99_ms':>9}{'max_ms':>9}"]
    for name, b in r["baseline"].items():
        lines.append(f"{'baseline ' + name:<34}{b['messages']:>8}{b['acked_per_s']:>10}")
    for key in ("max", "paced"):
        p = r[key]
        lat = p["detect_to_puback"]
        label = f"relay {key}" + (f" @{p['offered_per_s']:g}/s" if key == "paced" else "") + " detect->PUBACK"
        lines.append(f"{label:<34}{p['breaks']:>8}{p['breaks_per_s_detect_to_puback']:>10}"
                     f"{lat['p50_ms']:>9}{lat['p95_ms']:>9}{lat['p99_ms']:>9}{lat['max_ms']:>9}")
        for part, title in (("detect_to_committed", "detect->committed"),
                            ("committed_to_puback", "committed->PUBACK"),
                            ("detect_to_marked", "detect->marked")):
            m = p[part]
            lines.append(f"{'   ... ' + title:<34}{'':>18}{m['p50_ms']:>9}{m['p95_ms']:>9}{m['p99_ms']:>9}"
                         f"{m['max_ms']:>9}")
    pm, pp = r["max"], r["paced"]

    def kv(d: dict[str, Any]) -> str:
        return " ".join(f"{k}={v}" for k, v in d.items())

    lines.append(f"max: producer committed {pm['committed_per_s']}/s; relay {kv(pm['relay'])}")
    lines.append(f"paced: offered {pp['achieved_offer_per_s']}/s (late ticks {pp['late_ticks']}), "
                 f"backlog max {pp['backlog_max']}, at end {pp['backlog_at_end']}, drained "
                 f"{pp['drain_ms_after_last_detection']} ms after the last detection, "
                 f"kept up: {pp['kept_up']}")
    lines.append(f"paced: relay {kv(pp['relay'])}")
    for key in ("max", "paced"):
        c = dict(r[key]["check"])
        service = c.pop("publish_call_to_puback")
        lines.append(f"{key} check: {kv(c)}" + (f"; subscriber {kv(r[key]['subscriber'])}"
                                                 if "subscriber" in r[key] else ""))
        lines.append(f"{key} publish call -> PUBACK: {kv(service)}")
    t = r["targets"]
    lines.append(f"target {TARGET_PER_S:g} breaks/s: max {t['max_breaks_per_s']} -> {t['throughput_met']}; "
                 f"at {t['paced_rate']:g}/s kept up -> {t['paced_kept_up']}; p99 < {TARGET_P99_MS:g} ms: "
                 f"{t['paced_p99_ms']} -> {t['p99_met']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--private-broker", action="store_true",
                    help="start /usr/sbin/mosquitto on a free port instead of using --host/--port")
    ap.add_argument("--broker-nodelay", action="store_true",
                    help="with --private-broker: set_tcp_nodelay true")
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temporary directory")
    ap.add_argument("--count", type=int, default=20_000, help="breaks in the max-throughput phase")
    ap.add_argument("--baseline-count", type=int, default=None, help="default: --count")
    ap.add_argument("--per-commit", type=int, default=50, help="breaks per transaction (max phase)")
    ap.add_argument("--rate", type=float, default=TARGET_PER_S, help="breaks/s offered (paced phase)")
    ap.add_argument("--seconds", type=float, default=10.0, help="paced phase duration")
    ap.add_argument("--tick", type=float, default=0.02, help="paced phase: one transaction per tick")
    ap.add_argument("--window", type=int, default=100, help="the relay's window (its default: 100)")
    ap.add_argument("--relay-batch", type=int, default=500, help="the relay's batch (its default: 500)")
    ap.add_argument("--no-subscriber", dest="subscriber", action="store_false")
    ap.add_argument("--log-level", default="info",
                    help="the engine's logging (break_detected is a warning), rendered to /dev/null")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after setup (not what the engine does: to show what GC pauses cost)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=300.0, help="per phase, for the relay to drain")
    ap.add_argument("--subscriber", dest="subscriber_args", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.subscriber_args:
        host, port, topic = args.subscriber_args
        asyncio.run(subscriber_main(host, int(port), topic))
        return 0
    args.baseline_count = args.baseline_count or args.count
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the whole run logs into it
    configure(args.log_level, stream=devnull)
    # aiomqtt warns through the standard library ("There are N pending publish
    # calls", beyond 10 in flight); the engine leaves that to Python's last-resort
    # handler on stderr: keep its cost, not its noise
    mqtt_log = logging.getLogger("mqtt")
    mqtt_log.addHandler(logging.StreamHandler(devnull))
    mqtt_log.addHandler(WARNINGS)
    mqtt_log.propagate = False
    gc.callbacks.append(_gc_timer)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    broker: Broker | None = None
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        host, port = args.host, args.port
        if args.private_broker:
            broker = Broker(tmp, args.broker_nodelay)
            host, port = "127.0.0.1", broker.port
        try:
            result = asyncio.run(run(args, host, port, tmp))
        finally:
            if broker is not None:
                broker.stop()
    result["broker_nodelay"] = args.broker_nodelay if args.private_broker else "shared broker's setting"
    result["gc_freeze"] = args.gc_freeze
    pm, pp = result["max"], result["paced"]
    assert isinstance(pm, dict) and isinstance(pp, dict)
    rate = pm["breaks_per_s_detect_to_puback"]
    p99 = pp["detect_to_puback"]["p99_ms"]
    result["targets"] = {"max_breaks_per_s": rate,
                         "throughput_met": rate is not None and rate >= TARGET_PER_S,
                         "paced_rate": args.rate, "paced_kept_up": pp["kept_up"], "paced_p99_ms": p99,
                         "p99_met": bool(p99 < TARGET_P99_MS)}
    print(table(result))
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
