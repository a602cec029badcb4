"""The desk's watch on the bus (a small subscriber the desk can run or copy).

``watch`` subscribes to ``<prefix>/breaks/#`` at QoS 1 and prints one line per
break as it arrives, dropping repeats by the CloudEvent id (QoS 1 is
at-least-once, and the relay republishes after a lost connection).  A lost
or unreachable broker is tried again every 2 s (``Backoff.fixed``: a desk
watching breaks wants them as soon as the broker is back, not after a delay
that grew while it was down).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import OrderedDict
from typing import Any, TextIO

import aiomqtt

from stp.backoff import Backoff


def format_break_line(event: dict[str, Any]) -> str:
    d = event.get("data", {})
    return f"{event.get('time', '')}  {d.get('severity', ''):<8} {d.get('type', ''):<24} " \
           f"{d.get('break_id', '')}  {d.get('summary', '')}"


async def watch(host: str, port: int, prefix: str, out: TextIO, as_json: bool = False,
                count: int | None = None, client_id: str | None = None) -> int:
    """Print breaks as they arrive; returns how many were printed."""
    seen: OrderedDict[str, None] = OrderedDict()
    printed = 0
    backoff = Backoff.fixed(2.0)
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier=client_id,
                                      clean_session=client_id is None) as client:
                await client.subscribe(f"{prefix}/breaks/#", qos=1)
                backoff.reset()
                async for message in client.messages:
                    try:
                        event = json.loads(bytes(message.payload))
                    except (ValueError, TypeError):
                        continue
                    event_id = str(event.get("id", ""))
                    if event_id in seen:
                        continue
                    seen[event_id] = None
                    if len(seen) > 100_000:
                        seen.popitem(last=False)
                    out.write((json.dumps(event) if as_json else format_break_line(event)) + "\n")
                    out.flush()
                    printed += 1
                    if count is not None and printed >= count:
                        return printed
        except aiomqtt.MqttError as exc:
            out.flush()
            delay = backoff.next()
            print(f"broker {host}:{port} unavailable ({exc}); retrying in {delay:g} s", file=sys.stderr)
            await asyncio.sleep(delay)
