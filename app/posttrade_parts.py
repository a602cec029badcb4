"""Post-trade with what runs beside it (the outbox relay, the embedded broker
when the configuration asks for one, the inbox pruner): built and closed the
same way in the engine's process (``[engine] posttrade = "inline"``) and in
the post-trade process (``app.posttrade_process``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import structlog

from adapters.broker import EmbeddedBroker, broker_reachable
from adapters.commands import CommandListener
from adapters.config import EngineConfig
from adapters.db import inbox
from adapters.db.posttrade import PostTradeStore
from adapters.db.repository import Database
from adapters.mqtt import MqttSettings, OutboxRelay, settings_from_config
from handlers.posttrade import PostTrade
from stp.reference import ReferenceData

log = structlog.get_logger("engine")


@dataclass
class PostTradeParts:
    """Post-trade with what runs beside it: the outbox relay and the MQTT
    command listener (in the engine's process or in its post-trade process)."""

    posttrade: PostTrade
    relay: OutboxRelay | None

    def summary(self) -> dict[str, Any]:
        return {"posttrade_processed": self.posttrade.processed,
                "breaks_detected": self.posttrade.breaks.detected,
                "events_published": self.relay.published if self.relay else 0}


@contextlib.asynccontextmanager
async def running_posttrade(cfg: EngineConfig, db: Database, reference: ReferenceData,
                            catch_up_batch: int | None = None) -> AsyncIterator[PostTradeParts]:
    """Load post-trade's state, start it (it catches up from its cursor), the
    relay (and the embedded broker, if asked for) and the inbox's pruner.
    However the block ends, in this order: the pruner stops, post-trade
    processes what is committed, the relay publishes it (5 s at most: without
    a broker the outbox keeps it for the next start), the broker stops."""
    posttrade = PostTrade(
        PostTradeStore(db), reference, lp_sessions=frozenset(s.name for s in cfg.lps),
        key_by_platform={p.name: p.match_key for p in cfg.platforms},
        lp_for_platform={p.name: p.confirms for p in cfg.platforms if p.confirms},
        match_window=timedelta(seconds=cfg.match_window_s),
        price_tolerance=Decimal(cfg.match_price_tolerance), qty_tolerance=Decimal(cfg.match_qty_tolerance),
        topic_prefix=cfg.mqtt_topic_prefix, escalate_before=timedelta(minutes=cfg.escalate_before_minutes),
        house_accounts={s.name: s.house_account for s in cfg.lps if s.house_account})
    if catch_up_batch is not None:
        posttrade.catch_up_batch = catch_up_batch
    await posttrade.load()
    mqtt = settings_from_config(cfg)
    commands = CommandListener(db, cfg.mqtt_topic_prefix, wake=posttrade.tick_now.set)
    relay = OutboxRelay(db, mqtt, wakeup=posttrade.committed, commands=commands) if mqtt.enabled else None
    async with contextlib.AsyncExitStack() as stack:      # unwinds in the reverse order
        if relay is not None:
            embedded = await _embedded_broker(mqtt)
            if embedded is not None:
                stack.push_async_callback(embedded.astop)
            await stack.enter_async_context(relay)
        task = asyncio.create_task(posttrade.run(), name="posttrade")
        stack.push_async_callback(_stop_posttrade, posttrade, task)
        pruner = asyncio.create_task(prune_inbox_periodically(db, mqtt.request_id_retention_days),
                                     name="inbox-pruner")
        stack.push_async_callback(_cancelled, pruner)
        yield PostTradeParts(posttrade, relay)


async def _stop_posttrade(posttrade: PostTrade, task: asyncio.Task[None]) -> None:
    """Process what is committed, then end."""
    await posttrade.stop()
    await asyncio.shield(task)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait([task])


async def prune_inbox_periodically(db: Database, retention_days: float, every_s: float = 3600.0) -> None:
    """At start and every hour: delete the inbox rows applied more than
    ``retention_days`` ago (``[mqtt] request_id_retention_days``), which
    releases their request ids.  The outbox keeps what they did (the changes
    and the replies); a failure is logged and tried again next time."""
    retention_us = int(retention_days * 86_400_000_000)
    while True:
        try:
            pruned = await inbox.prune_inbox(db, retention_us)
            if pruned:
                log.info("inbox_pruned", rows=pruned, retention_days=retention_days)
        except Exception as exc:
            log.warning("inbox_prune_failed", error=repr(exc)[:300])
        await asyncio.sleep(every_s)


async def _embedded_broker(mqtt: MqttSettings) -> EmbeddedBroker | None:
    """Only with ``[mqtt] embedded = true`` (the shipped config/engine.toml
    asks for it, for a first look on a fresh machine; the default is false):
    when nothing listens on the configured loopback address (looked at for
    two seconds), start the embedded broker there, so a fresh machine sees
    its breaks.  A configuration that names a broker without asking never
    gets one: while that broker is down the events wait in the outbox, and
    its port stays free for it.  Never on a non-loopback address or with
    TLS: it accepts every client."""
    if not mqtt.embedded:
        return None
    if mqtt.tls or mqtt.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("mqtt_embedded_refused", host=mqtt.host, tls=mqtt.tls, reason="the embedded broker "
                    "listens on loopback addresses only, without TLS")
        return None
    # a broker restarting at this moment must not lose its port to ours: look a few times
    for _ in range(4):
        if await asyncio.to_thread(broker_reachable, mqtt.host, mqtt.port):
            return None
        await asyncio.sleep(0.5)
    broker = EmbeddedBroker(mqtt.host, mqtt.port)
    try:
        await broker.astart()
    except (RuntimeError, OSError) as exc:
        log.warning("mqtt_embedded_failed", host=mqtt.host, port=mqtt.port, error=str(exc)[:300])
        return None
    log.info("mqtt_embedded_started", host=mqtt.host, port=mqtt.port, broker="amqtt", pid=broker.pid,
             note="in-memory broker for a first look; use Mosquitto in production")
    return broker
