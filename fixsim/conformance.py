"""Conformance mode: the session layer as the acceptor the QuickFIX acceptance
definitions expect (see shared/fix-acceptance/README.md).

Profile: SenderCompID ISLD; FIX.4.4 for TargetCompIDs TW44 and TW, FIX.4.2 for
TW42, all on one port; ResetOnLogon; SendingTime with milliseconds and a
120 s accuracy window; inbound messages validated against the standard
dictionaries.  The application echoes NewOrderSingle (D), SecurityDefinition
(d) and Email (C) with the body in dictionary order, drops a D with
PossResend=Y whose ClOrdID this session has already seen, and answers any
other application message with BusinessMessageReject (380=3).

This is a test profile, not product behaviour.
"""

from __future__ import annotations

import asyncio

from fixsim.dictionary import load_dictionary
from fixsim.session import Session, SessionConfig, UnsupportedMessageType
from fixsim.store import MemoryStore
from fixsim.transport import FixAcceptor
from stp.fixwire import Message

PROFILE = (("FIX.4.4", "ISLD", "TW44"), ("FIX.4.4", "ISLD", "TW"), ("FIX.4.2", "ISLD", "TW42"))
ECHOED = frozenset({"D", "d", "C"})


class EchoApplication:
    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def on_logon(self, session: Session) -> None:
        self._seen[session.config.key] = set()

    def on_logout(self, session: Session) -> None:
        pass

    def from_admin(self, msg: Message, session: Session) -> None:
        pass

    def from_app(self, msg: Message, session: Session) -> None:
        msg_type = msg.msg_type
        if msg_type not in ECHOED:
            raise UnsupportedMessageType()
        if msg_type == "D":
            seen = self._seen.setdefault(session.config.key, set())
            cl_ord_id = msg.get(11, "") or ""
            if msg.get(97) == "Y" and cl_ord_id in seen:
                return
            seen.add(cl_ord_id)
        dictionary = session.dictionary
        assert dictionary is not None
        parsed = dictionary.split(msg, msg_type)
        header = [(t, v) for t, v in parsed.header if t not in (8, 9, 35)]
        session.send(msg_type, parsed.ordered_body(), header)


def conformance_sessions() -> list[Session]:
    app = EchoApplication()
    sessions = []
    for begin, ours, theirs in PROFILE:
        config = SessionConfig(begin_string=begin, sender_comp_id=ours, target_comp_id=theirs,
                               reset_on_logon=True, max_latency=120.0)
        sessions.append(Session(config, app, MemoryStore(), load_dictionary(begin)))
    return sessions


async def serve(port: int, host: str = "127.0.0.1", ready: asyncio.Event | None = None) -> None:
    acceptor = FixAcceptor(conformance_sessions(), host, port)
    await acceptor.start()
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await acceptor.stop(logout_wait=0.5)
