"""The FIX session protocol (FIX.4.2 / FIX.4.4) as a state machine without I/O.

A ``Session`` is fed parsed messages (``on_message``), garbled frames
(``on_garbled``), clock ticks (``on_timer``) and connection events; it
answers by queuing encoded bytes (``take_output``) and by setting
``disconnect_requested``.  The transport that owns the socket does the rest
(see ``fixsim.transport``), so everything here runs in tests without a
socket or an event loop.

Behaviour follows QuickFIX's ``Session`` (the reference the acceptance
definitions were written against): logon and logout handshakes, sequence
number checks with queueing of messages that arrive too high, ResendRequest
answered from the store with PossDupFlag=Y and OrigSendingTime and admin
messages gap-filled, SequenceReset in both modes, SendingTime and CompID
checks, session-level Reject with SessionRejectReason, and
BusinessMessageReject for application messages the application refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from fixsim import dictionary as dd
from fixsim.store import MemoryStore, MessageStore
from stp.fixwire import (
    SOH,
    GarbledMessage,
    Message,
    SendingTimeClock,
    encode,
    finish,
    parse_frame,
    parse_utc_timestamp,
    printable,
)

log = structlog.get_logger("fix.session")

# BusinessRejectReason (380)
BR_OTHER = 0
BR_UNKNOWN_ID = 1
BR_UNKNOWN_SECURITY = 2
BR_UNSUPPORTED_MESSAGE_TYPE = 3
BR_APPLICATION_NOT_AVAILABLE = 4
BR_CONDITIONALLY_REQUIRED_FIELD_MISSING = 5
BR_TEXT = {
    0: "Other",
    1: "Unknown ID",
    2: "Unknown Security",
    3: "Unsupported Message Type",
    4: "Application not available",
    5: "Conditionally Required Field Missing",
}

# Header tags the session owns; an application's header extras never set them.
_SESSION_HEADER = frozenset({8, 9, 35, 34, 49, 52, 56, 43, 122, 10})


class RejectLogon(Exception):
    """Raised by an application's ``from_admin`` to refuse a Logon."""


class UnsupportedMessageType(Exception):
    """Raised by ``from_app``: answered with BusinessMessageReject 380=3."""


class BusinessRejectError(Exception):
    """Raised by ``from_app``: answered with a BusinessMessageReject."""

    def __init__(self, reason: int, text: str = "", tag: int = 0) -> None:
        super().__init__(text or BR_TEXT.get(reason, "Other"))
        self.reason = reason
        self.text = text
        self.tag = tag


class _Disconnect(Exception):
    pass


class _UnsupportedVersion(Exception):
    pass


class Application(Protocol):
    def on_logon(self, session: Session) -> None: ...
    def on_logout(self, session: Session) -> None: ...
    def from_admin(self, msg: Message, session: Session) -> None: ...
    def from_app(self, msg: Message, session: Session) -> None: ...


class NullApplication:
    """Accepts the session, refuses every application message."""

    def on_logon(self, session: Session) -> None:
        pass

    def on_logout(self, session: Session) -> None:
        pass

    def from_admin(self, msg: Message, session: Session) -> None:
        pass

    def from_app(self, msg: Message, session: Session) -> None:
        raise UnsupportedMessageType()


@dataclass(slots=True)
class SessionConfig:
    begin_string: str
    sender_comp_id: str                 # ours
    target_comp_id: str                 # theirs
    heartbeat_interval: int = 30        # initiator: what we ask for
    initiator: bool = False
    reset_on_logon: bool = False
    reset_on_logout: bool = False
    reset_on_disconnect: bool = False
    check_latency: bool = True
    max_latency: float = 120.0
    check_comp_id: bool = True
    logout_timeout: float = 2.0
    logon_timeout: float = 10.0
    validate: bool = True               # inbound messages against the dictionary
    millisecond_timestamps: bool = True
    username: str | None = None         # initiator: sent on Logon; acceptor: required
    password: str | None = None

    @property
    def key(self) -> str:
        return f"{self.begin_string}-{self.sender_comp_id}-{self.target_comp_id}"


@dataclass(slots=True)
class SessionCounters:
    received: int = 0
    sent: int = 0
    rejects_sent: int = 0
    business_rejects_sent: int = 0
    garbled: int = 0
    resend_requests_received: int = 0
    resend_requests_sent: int = 0
    messages_resent: int = 0
    gap_fills_sent: int = 0
    poss_dup_ignored: int = 0
    logons: int = 0


class Session:
    def __init__(self, config: SessionConfig, application: Application | None = None,
                 store: MessageStore | None = None,
                 dictionary: dd.DataDictionary | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.app: Application = application if application is not None else NullApplication()
        self.store: MessageStore = store if store is not None else MemoryStore()
        self.dictionary = dictionary
        self.clock = clock
        self.log = log.bind(session=config.key)
        self.counters = SessionCounters()
        self._ts = SendingTimeClock(config.millisecond_timestamps)
        self._out: list[bytes] = []
        self.disconnect_requested = False
        self.connected = False
        # per-connection state
        self.heartbeat_interval = config.heartbeat_interval
        self.received_logon = False
        self.sent_logon = False
        self.sent_logout = False
        self.sent_reset = False
        self.received_reset = False
        self.test_request_counter = 0
        self.last_sent = 0.0
        self.last_received = 0.0
        self.logon_sent_at = 0.0
        self.resend_range: tuple[int, int] | None = None
        self._queue: dict[int, Message] = {}
        # header fields an outgoing message gets besides the session's own
        self._begin = config.begin_string
        self._fix42_plus = config.begin_string >= "FIX.4.2"

    # ------------------------------------------------------------------ state
    @property
    def logged_on(self) -> bool:
        return self.received_logon and self.sent_logon

    @property
    def next_sender_seq(self) -> int:
        return self.store.next_sender_seq

    @property
    def next_target_seq(self) -> int:
        return self.store.next_target_seq

    def take_output(self) -> bytes:
        """Everything queued for the wire, after the store has been flushed."""
        if not self._out:
            return b""
        self.store.flush()
        data = b"".join(self._out)
        self._out.clear()
        return data

    def reset_sequence(self) -> None:
        self.log.info("sequence_reset", sender=self.next_sender_seq, target=self.next_target_seq)
        self.store.reset()

    # ------------------------------------------------------------ connection
    def on_connect(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.connected = True
        self.disconnect_requested = False
        self.last_received = now
        self.last_sent = now
        if self.config.initiator:
            self.generate_logon(now)

    def on_disconnect(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self._out.clear()   # never carry frames over to the next connection
        was_logged = self.received_logon or self.sent_logon
        self.received_logon = self.sent_logon = False
        self.sent_logout = self.received_reset = self.sent_reset = False
        self.test_request_counter = 0
        self._queue.clear()
        self.resend_range = None
        if self.config.reset_on_disconnect:
            self.store.reset()
        self.store.flush()
        if was_logged:
            self.log.info("fix_logout", reason="disconnected")
            self._safe_app(self.app.on_logout)

    def request_disconnect(self, reason: str) -> None:
        if not self.disconnect_requested:
            self.log.info("fix_disconnect", reason=reason)
        self.disconnect_requested = True

    def logout(self, text: str = "") -> None:
        """Start an orderly logout (the transport disconnects on the answer)."""
        if self.logged_on and not self.sent_logout:
            self.generate_logout(text)

    # ----------------------------------------------------------------- input
    def on_bytes_frame(self, frame: bytes, now: float | None = None) -> None:
        try:
            msg = parse_frame(frame)
        except GarbledMessage as exc:
            self.on_garbled(frame, str(exc))
            return
        self.on_message(msg, now)

    def on_garbled(self, frame: bytes, reason: str) -> None:
        self.counters.garbled += 1
        self.log.warning("fix_garbled", reason=reason, raw=printable(frame, 200))
        if not self.received_logon:
            self.request_disconnect("garbled message before logon")

    def on_message(self, msg: Message, now: float | None = None, queued: bool = False) -> None:
        now = self.clock() if now is None else now
        if not queued:
            self.counters.received += 1
        msg_type = msg.msg_type
        try:
            try:
                if msg.get(8) != self._begin:
                    raise _UnsupportedVersion()
                if self.config.validate and self.dictionary is not None:
                    self.dictionary.validate(msg)
                if msg_type == "A":
                    self._next_logon(msg, now)
                elif msg_type == "0":
                    self._next_heartbeat(msg, now)
                elif msg_type == "1":
                    self._next_test_request(msg, now)
                elif msg_type == "4":
                    self._next_sequence_reset(msg, now)
                elif msg_type == "5":
                    self._next_logout(msg, now)
                elif msg_type == "2":
                    self._next_resend_request(msg, now)
                elif msg_type == "3":
                    self._next_reject(msg, now)
                else:
                    if self._verify(msg, now, True, True):
                        self.store.next_target_seq += 1
            except dd.SessionRejectError as exc:
                self.generate_reject(msg, exc.reason, exc.tag, now)
            except UnsupportedMessageType:
                if self._fix42_plus:
                    self.generate_business_reject(msg, BR_UNSUPPORTED_MESSAGE_TYPE, now=now)
                else:
                    self.generate_reject(msg, dd.OTHER, 0, now, text="Unsupported message type")
            except BusinessRejectError as exc:
                self.generate_business_reject(msg, exc.reason, exc.text, exc.tag, now)
            except RejectLogon as exc:
                self.log.warning("fix_logon_rejected", reason=str(exc))
                self.generate_logout(str(exc), now)
                self.store.next_target_seq += 1
                raise _Disconnect(str(exc)) from None
            except _UnsupportedVersion:
                if msg_type == "5":
                    self._next_logout(msg, now)
                else:
                    self.generate_logout("Incorrect BeginString", now)
                    self.store.next_target_seq += 1
        except _Disconnect as exc:
            self.request_disconnect(str(exc))
            return
        except Exception:
            # An application bug: answer the message, never kill the session.
            self._msg_log(msg).exception("fix_application_error")
            if self.received_logon and msg_type not in dd.ADMIN_MSG_TYPES \
                    and msg.get(34) == str(self.next_target_seq):
                self.generate_business_reject(msg, BR_APPLICATION_NOT_AVAILABLE,
                                              "Application error", now=now)
        if not queued:
            self._next_queued(now)
        if self.logged_on:
            self.on_timer(now)

    def on_timer(self, now: float | None = None) -> None:
        """Heartbeats, test requests and timeouts; call about once a second."""
        now = self.clock() if now is None else now
        if not self.connected or self.disconnect_requested:
            return
        if not self.received_logon:
            if self.sent_logon and now - self.logon_sent_at >= self.config.logon_timeout:
                self.request_disconnect("timed out waiting for logon response")
            return
        hb = self.heartbeat_interval
        if hb == 0:
            return
        if self.sent_logout and now - self.last_sent >= self.config.logout_timeout:
            self.request_disconnect("timed out waiting for logout response")
            return
        since_sent = now - self.last_sent
        since_received = now - self.last_received
        if since_sent < hb and since_received < hb:
            return
        if since_received >= 2.4 * hb:
            self.request_disconnect("timed out waiting for heartbeat")
        elif since_received >= 1.2 * (self.test_request_counter + 1) * hb:
            self.generate_test_request("TEST", now)
            self.test_request_counter += 1
            self.log.info("fix_test_request_sent")
        elif since_sent >= hb and self.test_request_counter == 0:
            self.generate_heartbeat(None, now)

    # ------------------------------------------------------------- handlers
    def _next_logon(self, msg: Message, now: float) -> None:
        reset_flag = msg.get(141) == "Y"
        self.received_reset = reset_flag
        if reset_flag:
            self.log.info("fix_logon_reset_requested")
            if not self.sent_reset:
                self.store.reset()
        if self.config.initiator and not self.sent_logon and not self.received_reset:
            raise _Disconnect("received logon response before sending request")
        if not self.config.initiator and self.config.reset_on_logon:
            self.store.reset()
        if not self._verify(msg, now, False, True):
            return
        self.received_logon = True
        if not self.config.initiator or (self.received_reset and not self.sent_reset):
            hb = msg.get(108)
            self.heartbeat_interval = int(hb) if hb and hb.isdigit() else self.config.heartbeat_interval
            self.generate_logon(now, response_to=msg)
        self.sent_reset = self.received_reset = False
        seq = int(msg[34])
        if seq > self.next_target_seq and not reset_flag:
            self._do_target_too_high(msg, seq, now)
        else:
            self.store.next_target_seq += 1
            self._next_queued(now)
        if self.logged_on:
            self.counters.logons += 1
            self.log.info("fix_logon", next_sender=self.next_sender_seq,
                          next_target=self.next_target_seq, heartbeat=self.heartbeat_interval)
            self._safe_app(self.app.on_logon)

    def _next_heartbeat(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, True, True):
            return
        self.store.next_target_seq += 1
        self._next_queued(now)

    def _next_test_request(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, True, True):
            return
        self.generate_heartbeat(msg.get(112), now)
        self.store.next_target_seq += 1
        self._next_queued(now)

    def _next_logout(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, False, False):
            return
        if not self.sent_logout:
            self.log.info("fix_logout_received", text=msg.get(58))
            self.generate_logout("", now)
        self.store.next_target_seq += 1
        if self.config.reset_on_logout:
            self.store.reset()
        raise _Disconnect("logout")

    def _next_reject(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, False, True):
            return
        self.log.warning("fix_reject_received", ref_seq=msg.get(45), text=msg.get(58),
                         reason=msg.get(373), ref_tag=msg.get(371))
        self.store.next_target_seq += 1
        self._next_queued(now)

    def _next_sequence_reset(self, msg: Message, now: float) -> None:
        gap_fill = msg.get(123) == "Y"
        if not self._verify(msg, now, gap_fill, gap_fill):
            return
        new_seq_text = msg.get(36)
        if new_seq_text is None:
            return
        new_seq = _int_field(msg, 36)
        self.log.info("fix_sequence_reset_received", gap_fill=gap_fill, new_seq=new_seq,
                      expected=self.next_target_seq)
        if new_seq > self.next_target_seq:
            self.store.next_target_seq = new_seq
        elif new_seq < self.next_target_seq:
            self.generate_reject(msg, dd.VALUE_IS_INCORRECT, 0, now)

    def _next_resend_request(self, msg: Message, now: float) -> None:
        if not self._verify(msg, now, False, False):
            return
        self.counters.resend_requests_received += 1
        begin = _int_field(msg, 7)
        end = _int_field(msg, 16)
        last_sent = self.next_sender_seq - 1
        if (self._fix42_plus and end == 0) or end >= self.next_sender_seq or \
                (self._begin <= "FIX.4.2" and end == 999999):
            end = last_sent
        self.log.info("fix_resend_request_received", begin=begin, end=end)
        self._resend(begin, end, now)
        seq = _int_field(msg, 34)
        if seq == self.next_target_seq:
            self.store.next_target_seq += 1

    def _resend(self, begin: int, end: int, now: float) -> None:
        gap_start = 0
        current = begin
        seq = begin - 1
        for seq, raw in self.store.get_range(begin, end):
            if current != seq and not gap_start:
                gap_start = current
            try:
                stored = parse_frame(raw)
            except GarbledMessage:
                stored = None
            if stored is None or dd.ADMIN_MSG_TYPES.__contains__(stored.msg_type):
                if not gap_start:
                    gap_start = seq
            else:
                if gap_start:
                    self.generate_gap_fill(gap_start, seq, now)
                    gap_start = 0
                self._out.append(self._possdup_copy(stored, now))
                self.counters.messages_resent += 1
            current = seq + 1
        if gap_start:
            self.generate_gap_fill(gap_start, seq + 1, now)
        if end > seq:
            new_seq = min(end + 1, self.next_sender_seq)
            self.generate_gap_fill(max(begin, seq + 1) if seq >= begin else begin, new_seq, now)
        self.last_sent = now

    def _possdup_copy(self, stored: Message, now: float) -> bytes:
        header: list[tuple[int, str]] = []
        body: list[tuple[int, str]] = []
        header_tags = self.dictionary.header_tags if self.dictionary else _DEFAULT_HEADER
        orig = stored.get(52, "") or ""
        for tag, value in stored.fields[3:-1]:
            if tag in (43, 52, 122):
                continue
            (header if tag in header_tags else body).append((tag, value))
        header.extend(((43, "Y"), (52, self._ts.format(now)), (122, orig)))
        return encode(self._begin, stored.msg_type, header, body)

    # --------------------------------------------------------------- verify
    def _valid_logon_state(self, msg_type: str) -> bool:
        if (msg_type == "A" and self.sent_reset) or self.received_reset:
            return True
        if (msg_type == "A" and not self.received_logon) or (msg_type != "A" and self.received_logon):
            return True
        if msg_type == "5" and self.sent_logon:
            return True
        if msg_type != "5" and self.sent_logout:
            return True
        return msg_type in ("4", "3")

    def _verify(self, msg: Message, now: float, check_high: bool, check_low: bool) -> bool:
        msg_type = msg.msg_type
        sender = msg.get(49)
        target = msg.get(56)
        sending_time = msg.get(52)
        seq = 0
        if sender is None or target is None or sending_time is None:
            raise dd.SessionRejectError(dd.REQUIRED_TAG_MISSING,
                                        49 if sender is None else 56 if target is None else 52)
        if check_high or check_low:
            seq_text = msg.get(34)
            if seq_text is None:
                raise dd.SessionRejectError(dd.REQUIRED_TAG_MISSING, 34)
            if not (seq_text.isascii() and seq_text.isdigit()):
                raise dd.SessionRejectError(dd.INCORRECT_DATA_FORMAT, 34)
            seq = int(seq_text)
        if not self._valid_logon_state(msg_type):
            raise _Disconnect(f"logon state is not valid for message type {msg_type}")
        if not self._good_time(sending_time, now):
            self.log.warning("fix_sendingtime_problem", sending_time=sending_time)
            self.generate_reject(msg, dd.SENDINGTIME_ACCURACY_PROBLEM, 0, now)
            self.generate_logout("", now)
            return False
        if self.config.check_comp_id and (sender != self.config.target_comp_id
                                          or target != self.config.sender_comp_id):
            self.log.warning("fix_compid_problem", sender=sender, target=target)
            self.generate_reject(msg, dd.COMPID_PROBLEM, 0, now)
            self.generate_logout("", now)
            return False
        expected = self.next_target_seq
        if check_high and seq > expected:
            self._do_target_too_high(msg, seq, now)
            return False
        if check_low and seq < expected:
            self._do_target_too_low(msg, seq, now)
            return False
        if (check_high or check_low) and self.resend_range is not None \
                and seq >= self.resend_range[1]:
            self.log.info("fix_resend_satisfied", begin=self.resend_range[0],
                          end=self.resend_range[1])
            self.resend_range = None
        self.last_received = now
        self.test_request_counter = 0
        if msg_type in dd.ADMIN_MSG_TYPES:
            self.app.from_admin(msg, self)
            if msg_type == "A" and not self.config.initiator:
                self._check_credentials(msg)
        else:
            self.app.from_app(msg, self)
        return True

    def _check_credentials(self, msg: Message) -> None:
        cfg = self.config
        if cfg.username is not None and msg.get(553) != cfg.username:
            raise RejectLogon("invalid username")
        if cfg.password is not None and msg.get(554) != cfg.password:
            raise RejectLogon("invalid password")

    def _good_time(self, sending_time: str, now: float) -> bool:
        if not self.config.check_latency:
            return True
        try:
            sent = parse_utc_timestamp(sending_time)
        except ValueError:
            return False
        return abs(now - sent) <= self.config.max_latency

    def _do_target_too_high(self, msg: Message, seq: int, now: float) -> None:
        expected = self.next_target_seq
        self._msg_log(msg).info("fix_seq_too_high", expected=expected)
        self._queue[seq] = msg
        if self.resend_range is not None and seq >= self.resend_range[0]:
            return
        self.generate_resend_request(expected, seq - 1, now)

    def _do_target_too_low(self, msg: Message, seq: int, now: float) -> None:
        if msg.get(43) != "Y":
            text = f"MsgSeqNum too low, expecting {self.next_target_seq} but received {seq}"
            self._msg_log(msg).error("fix_seq_too_low", expected=self.next_target_seq)
            self.generate_logout(text, now)
            raise _Disconnect(text)
        self._do_poss_dup(msg, now)

    def _do_poss_dup(self, msg: Message, now: float) -> None:
        if msg.msg_type != "4":
            orig = msg.get(122)
            if orig is None:
                self.generate_reject(msg, dd.REQUIRED_TAG_MISSING, 122, now)
                return
            try:
                too_late = parse_utc_timestamp(orig) > parse_utc_timestamp(msg[52])
            except ValueError:
                too_late = True
            if too_late:
                self.generate_reject(msg, dd.SENDINGTIME_ACCURACY_PROBLEM, 0, now)
                self.generate_logout("", now)
                return
        self.counters.poss_dup_ignored += 1

    def _next_queued(self, now: float) -> None:
        while True:
            msg = self._queue.pop(self.next_target_seq, None)
            if msg is None:
                return
            if msg.msg_type in ("A", "2"):
                self.store.next_target_seq += 1
            else:
                self.on_message(msg, now, queued=True)
            if self.disconnect_requested:
                return

    # --------------------------------------------------------------- output
    def _send_raw(self, msg_type: str, body: Sequence[tuple[int, str]] | str,
                  header: Sequence[tuple[int, str]] = (), now: float | None = None,
                  seq: int | None = None,
                  mangle: Callable[[bytes], bytes | None] | None = None) -> int:
        now = self.clock() if now is None else now
        persist = seq is None
        if seq is None:
            seq = self.store.next_sender_seq
        hdr = [(34, str(seq)), (49, self.config.sender_comp_id), (52, self._ts.format(now)),
               (56, self.config.target_comp_id)]
        hdr.extend(header)
        raw = encode(self._begin, msg_type, hdr, body)
        if persist:
            self.store.save(seq, raw)
            self.store.next_sender_seq = seq + 1
        if msg_type not in dd.ADMIN_MSG_TYPES and not self.logged_on:
            # QuickFIX semantics: stored, not sent; the peer gets it by resend.
            self.last_sent = now
            return seq
        wire = raw if mangle is None else mangle(raw)
        if wire:
            self._out.append(wire)
        self.last_sent = now
        self.counters.sent += 1
        return seq

    def send(self, msg_type: str, body: Sequence[tuple[int, str]] | str,
             header: Sequence[tuple[int, str]] = (),
             mangle: Callable[[bytes], bytes | None] | None = None) -> int:
        """Send an application message; returns its MsgSeqNum.

        ``mangle`` (fault injection) transforms the encoded bytes on their way
        to the wire, after the message is stored: return None to lose it.
        """
        extra = [f for f in header if f[0] not in _SESSION_HEADER]
        return self._send_raw(msg_type, body, extra, mangle=mangle)

    def resend_possdup(self, seq: int, now: float | None = None) -> bool:
        """Send stored message ``seq`` again with PossDupFlag=Y (same MsgSeqNum)."""
        stored = self.store.get_range(seq, seq)
        if not stored:
            return False
        self._out.append(self._possdup_copy(parse_frame(stored[0][1]), self.clock() if now is None else now))
        return True

    def send_batch(self, msg_type: str, bodies: Iterable[str], now: float | None = None) -> int:
        """Hot path: send pre-encoded bodies ("tag=value\\x01..."); returns the count."""
        now = self.clock() if now is None else now
        store = self.store
        first = store.next_sender_seq
        prefix = f"35={msg_type}{SOH}34="
        suffix = f"{SOH}49={self.config.sender_comp_id}{SOH}52={self._ts.format(now)}{SOH}" \
                 f"56={self.config.target_comp_id}{SOH}"
        begin = self._begin
        raws = [finish(begin, f"{prefix}{seq}{suffix}{body}") for seq, body in enumerate(bodies, first)]
        count = len(raws)
        store.save_many(first, raws)
        store.next_sender_seq = first + count
        if self.logged_on:
            self._out.extend(raws)
        if count:
            self.last_sent = now
            self.counters.sent += count
        return count

    def generate_logon(self, now: float, response_to: Message | None = None) -> None:
        body: list[tuple[int, str]] = [(98, "0")]
        if response_to is None:
            body.append((108, str(self.config.heartbeat_interval)))
            if self.config.reset_on_logon:
                self.store.reset()
            if (self.config.reset_on_logon or self.config.reset_on_logout
                    or self.config.reset_on_disconnect) and self.next_sender_seq == 1 \
                    and self.next_target_seq == 1:
                body.append((141, "Y"))
                self.sent_reset = True
            if self.config.username is not None:
                body.append((553, self.config.username))
            if self.config.password is not None:
                body.append((554, self.config.password))
            self.last_received = now
            self.test_request_counter = 0
            self.logon_sent_at = now
        else:
            body.append((108, response_to.get(108, "30") or "30"))
            if self.received_reset:
                body.append((141, "Y"))
        self.sent_logon = True
        self._send_raw("A", sorted(body), now=now)

    def generate_logout(self, text: str = "", now: float | None = None) -> None:
        body = [(58, text)] if text else []
        self._send_raw("5", body, now=now)
        self.sent_logout = True

    def generate_heartbeat(self, test_req_id: str | None, now: float | None = None) -> None:
        self._send_raw("0", [(112, test_req_id)] if test_req_id is not None else [], now=now)

    def generate_test_request(self, test_req_id: str, now: float | None = None) -> None:
        self._send_raw("1", [(112, test_req_id)], now=now)

    def generate_resend_request(self, begin: int, end_received: int, now: float) -> None:
        end = "0" if self._fix42_plus else "999999"
        self._send_raw("2", [(7, str(begin)), (16, end)], now=now)
        self.resend_range = (begin, end_received)
        self.counters.resend_requests_sent += 1
        self.log.info("fix_resend_request_sent", begin=begin, end=end_received)

    def generate_gap_fill(self, begin: int, new_seq: int, now: float) -> None:
        ts = self._ts.format(now)
        self._send_raw("4", [(36, str(new_seq)), (123, "Y")], [(43, "Y"), (122, ts)],
                       now=now, seq=begin)
        self.counters.gap_fills_sent += 1

    def generate_reject(self, msg: Message, reason: int, tag: int, now: float,
                        text: str | None = None) -> None:
        msg_type = msg.msg_type
        seq_text = msg.get(34)
        body: list[tuple[int, str]] = []
        if seq_text:
            body.append((45, seq_text))
        if self._fix42_plus:
            if msg_type:
                body.append((372, msg_type))
            if (self._begin == "FIX.4.2" and reason <= dd.INVALID_MSGTYPE) or \
                    self._begin > "FIX.4.2":
                body.append((373, str(reason)))
        if msg_type not in ("A", "4") and seq_text is not None and seq_text.isdigit() \
                and int(seq_text) == self.next_target_seq:
            self.store.next_target_seq += 1
        reason_text = text if text is not None else dd.REJECT_TEXT.get(reason)
        if reason_text:
            if tag or reason == dd.INVALID_TAG_NUMBER:
                if self._fix42_plus:
                    body.extend(((371, str(tag)), (58, reason_text)))
                else:
                    body.append((58, f"{reason_text} ({tag})"))
            else:
                body.append((58, reason_text))
        if not self.received_logon:
            raise _Disconnect(f"tried to send a reject while not logged on: {reason_text}")
        self.counters.rejects_sent += 1
        self._msg_log(msg).warning("fix_reject_sent", reason=reason, ref_tag=tag, text=reason_text)
        body.sort()
        self._send_raw("3", body, _reverse_route(msg), now=now)

    def generate_business_reject(self, msg: Message, reason: int, text: str = "",
                                 tag: int = 0, now: float | None = None) -> None:
        body: list[tuple[int, str]] = [(372, msg.msg_type), (45, msg.get(34, "0") or "0"),
                                       (380, str(reason))]
        self.store.next_target_seq += 1
        reason_text = text or BR_TEXT.get(reason, "")
        if reason_text:
            body.append((58, f"{reason_text} ({tag})" if tag else reason_text))
        self.counters.business_rejects_sent += 1
        self._msg_log(msg).warning("fix_business_reject_sent", reason=reason, text=reason_text)
        body.sort()
        self._send_raw("j", body, now=now)

    def _msg_log(self, msg: Message) -> Any:
        """The session logger with the message's context bound (error paths only)."""
        return self.log.bind(seq=msg.get(34), msg_type=msg.msg_type, exec_id=msg.get(17),
                             poss_dup=msg.get(43) == "Y")

    def _safe_app(self, fn: Callable[[Session], Any]) -> None:
        try:
            fn(self)
        except Exception:  # an application bug must not take the session down
            self.log.exception("fix_application_error")


def _int_field(msg: Message, tag: int) -> int:
    """An integer field the session needs; a bad one is a Reject (373=1 or 6)."""
    value = msg.get(tag)
    if value is None:
        raise dd.SessionRejectError(dd.REQUIRED_TAG_MISSING, tag)
    if not (value.isascii() and value.isdigit()):
        raise dd.SessionRejectError(dd.INCORRECT_DATA_FORMAT, tag)
    return int(value)


_DEFAULT_HEADER = frozenset({8, 9, 35, 34, 43, 49, 50, 52, 56, 57, 97, 115, 116, 122, 128,
                             129, 142, 143, 144, 145, 369})
_ROUTE_SWAP = ((115, 128), (128, 115), (116, 129), (129, 116), (144, 145), (145, 144))


def _reverse_route(msg: Message) -> list[tuple[int, str]]:
    out = []
    for src, dst in _ROUTE_SWAP:
        value = msg.get(src)
        if value:
            out.append((dst, value))
    return out
