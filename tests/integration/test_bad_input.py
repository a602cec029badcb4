"""Bad input over a real socket: the acceptor neither stalls nor crashes.

Each case sends raw bytes to a FixAcceptor running the project's session
layer, then proves the session still works by what it answers next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from fixsim.dictionary import load_dictionary
from fixsim.session import NullApplication, Session, SessionConfig
from fixsim.store import MemoryStore
from fixsim.transport import FixAcceptor
from stp.fixwire import Framer, Message, finish, format_utc_timestamp, parse_frame
from tests.conftest import free_port

MAX = 4096


def msg(msg_type: str, seq: int, body: str = "", sender: str = "ENG", target: str = "LP1",
        begin: str = "FIX.4.4") -> bytes:
    ts = format_utc_timestamp(time.time())
    return finish(begin, f"35={msg_type}\x0134={seq}\x0149={sender}\x0152={ts}\x0156={target}\x01{body}")


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = Framer()
        self.pending: list[Message] = []

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 3.0) -> Message:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.pending:
            remaining = deadline - asyncio.get_running_loop().time()
            data = await asyncio.wait_for(self.reader.read(65536), max(remaining, 0.01))
            if not data:
                raise ConnectionError("closed by the acceptor")
            self.framer.feed(data)
            for frame, err in self.framer.frames():
                assert err is None, err
                self.pending.append(parse_frame(frame))
        return self.pending.pop(0)

    async def closed(self, timeout: float = 3.0) -> bytes:
        """Everything sent until the acceptor closed the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def logon(self) -> None:
        await self.send(msg("A", 1, "98=0\x01108=30\x01"))
        reply = await self.recv()
        assert reply.msg_type == "A"


@pytest.fixture
async def acceptor() -> AsyncIterator[tuple[FixAcceptor, Session]]:
    session = Session(SessionConfig("FIX.4.4", "LP1", "ENG", reset_on_logon=True),
                      NullApplication(), MemoryStore(), load_dictionary("FIX.4.4"))
    acc = FixAcceptor([session], "127.0.0.1", free_port(), max_message_size=MAX, logon_timeout=1.0)
    await acc.start()
    yield acc, session
    await acc.stop(logout_wait=0.2)


async def connect(acc: FixAcceptor) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", acc.port)
    return Client(reader, writer)


async def assert_alive(client: Client, seq: int, expect_resend_from: int | None = None) -> None:
    """A TestRequest with ``seq`` is answered (after a ResendRequest if a gap)."""
    await client.send(msg("1", seq, "112=ALIVE\x01"))
    reply = await client.recv()
    if expect_resend_from is not None:
        assert reply.msg_type == "2" and reply[7] == str(expect_resend_from), reply
        return
    assert reply.msg_type == "0" and reply[112] == "ALIVE", reply


async def test_unknown_comp_ids_are_disconnected_without_answer(
        acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, _ = acceptor
    for sender, target in (("WHO", "LP1"), ("ENG", "NOTUS")):
        client = await connect(acc)
        await client.send(msg("A", 1, "98=0\x01108=30\x01", sender=sender, target=target))
        assert await client.closed() == b""
    client = await connect(acc)           # a configured session still logs on
    await client.logon()


async def test_first_message_not_logon_or_garbled_disconnects(acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, _ = acceptor
    client = await connect(acc)
    await client.send(msg("0", 1))
    assert await client.closed() == b""
    client = await connect(acc)
    await client.send(msg("A", 1, "98=0\x01108=30\x01")[:-4] + b"999\x01")   # bad checksum
    assert await client.closed() == b""
    client = await connect(acc)
    await client.send(msg("A", 1, "98=0\x01108=30\x01")[:30])   # never completed
    assert await client.closed(timeout=acc.logon_timeout + 2) == b""


async def test_wrong_checksum_and_length_are_ignored(acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, session = acceptor
    client = await connect(acc)
    await client.logon()
    good = msg("1", 2, "112=X\x01")
    await client.send(good[:-4] + b"%03d\x01" % ((int(good[-4:-1]) + 7) % 256))    # wrong checksum
    bad_len = good.replace(b"\x019=55", b"\x019=45", 1)                           # wrong length
    assert bad_len != good
    await client.send(bad_len)
    await assert_alive(client, 2)
    assert session.counters.garbled >= 1


async def test_oversized_message_is_dropped_and_stream_resynchronises(
        acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, session = acceptor
    client = await connect(acc)
    await client.logon()
    # a declared length far above the limit: must not wait for 10 MB
    await client.send(b"8=FIX.4.4\x019=10000000\x0135=0\x0134=2\x01" + b"x" * 100)
    # a real message above the limit
    await client.send(msg("1", 2, "112=" + "y" * (MAX * 2) + "\x01"))
    await assert_alive(client, 2)
    assert session.logged_on


async def test_non_numeric_tags_and_junk_are_ignored(acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, _ = acceptor
    client = await connect(acc)
    await client.logon()
    body = msg("1", 2, "112=X\x01").replace(b"\x01112=", b"\x0111a2=")
    head, rest = body.split(b"\x0135=", 1)
    await client.send(body)                      # non-numeric tag (checksum of the bytes sent is wrong too)
    await client.send(b"\x00\xff garbage without a begin string \x01\x01")
    await client.send(finish("FIX.4.4", "35=1\x0134=2\x01X=1\x01"))   # well framed, tag not a number
    del head, rest
    await assert_alive(client, 2)


async def test_truncated_message_then_disconnect_leaves_acceptor_usable(
        acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, session = acceptor
    client = await connect(acc)
    await client.logon()
    await client.send(msg("1", 2, "112=X\x01")[:25])   # cut in the middle
    client.writer.close()
    await asyncio.sleep(0.2)
    assert not session.connected
    client = await connect(acc)
    await client.logon()                               # reset_on_logon: starts at 1 again
    await assert_alive(client, 2)


async def test_sequence_gap_is_detected_after_garbage(acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, _ = acceptor
    client = await connect(acc)
    await client.logon()
    await client.send(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01")   # garbled, ignored
    await assert_alive(client, 3, expect_resend_from=2)


async def test_logon_without_required_fields_disconnects(acceptor: tuple[FixAcceptor, Session]) -> None:
    acc, _ = acceptor
    client = await connect(acc)
    await client.send(msg("A", 1, "108=30\x01"))       # EncryptMethod (98) missing
    assert await client.closed() == b""
