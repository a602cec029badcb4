"""The intake's input: one message or session event as the FIX gateway hands
it over (``adapters.fix.gateway`` produces it, ``handlers.intake`` consumes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# what quickfix handed over: an application message, a message type the
# engine does not take, a message quickfix rejected at the session level, a
# SequenceReset, a message over the size cap, a message that killed the gateway
# twice (adapters/fix/poison.py); or an event about a session
MessageKind = Literal["app", "unsupported", "session_reject", "reset", "oversized", "poison"]
SessionEventKind = Literal["session_logon", "session_logout", "seq_set"]
InboundKind = MessageKind | SessionEventKind
KINDS: tuple[MessageKind, ...] = ("app", "unsupported", "session_reject", "reset", "oversized", "poison")
# gateway -> engine events about a session, handed to the intake in order with
# the messages (as ``Inbound`` with the event's JSON as ``raw``)
SESSION_EVENTS: frozenset[str] = frozenset({"session_logon", "session_logout", "seq_set"})


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message handed from the gateway to the intake."""

    session: str                  # configured session name
    raw: str                      # the message as quickfix received it (see ``binary``)
    received: float               # time.time() in the callback
    kind: InboundKind
    # the bytes are not valid UTF-8: ``raw`` holds them with surrogate escapes
    # (``raw.encode("utf-8", "surrogateescape")`` gives them back exactly)
    binary: bool = False
    size: int = -1                # the message's true size in bytes; larger than raw's when truncated
    truncated: bool = False       # raw is the message's first bytes the gateway keeps (it was oversized)

    def wire_bytes(self) -> bytes:
        return self.raw.encode("utf-8", "surrogateescape")
