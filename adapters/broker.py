"""An embedded MQTT broker for machines without one (amqtt, pure Python).

``EmbeddedBroker`` runs ``python -m adapters.broker --host H --port P`` as a
child process and waits until it listens; ``stop`` ends it (SIGTERM, then
SIGKILL after 5 s).  The child listens on that one TCP address only (no
websockets, no $SYS topics), accepts every client, keeps amqtt's own logging
at WARNING, stops on SIGTERM/SIGINT and exits by itself within a second or so
when its parent goes away (an engine killed with SIGKILL leaves no broker
holding the port).  It runs in its own session, so a Ctrl-C in the engine's
terminal reaches the engine only and the engine can still say "offline" to
the broker before stopping it.

Everything the broker holds is in memory: retained messages, persistent
sessions and the QoS 1 messages queued for them are kept while it runs and
are gone when it stops.  It is for a user's first look at the engine, not
for production (use Mosquitto there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

READY = "mqtt broker (amqtt) listening on"


def broker_reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """An amqtt broker in a child process, listening on host:port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, start_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stderr_text(self) -> str:
        """What the child has written to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def start(self) -> None:
        """Start the child; return once it listens, or raise RuntimeError."""
        if self.running:
            return
        self.stop()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes it until stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.broker", "--host", self.host, "--port", str(self.port),
             "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            # the ready line, not just an open port: another broker may hold it
            if READY in self.stderr_text() and broker_reachable(self.host, self.port):
                return
            failed = self._proc.poll() is not None
            if failed or time.monotonic() > deadline:
                why = (f"exited with code {self._proc.returncode}" if failed
                       else f"did not listen within {self.start_timeout:g} s")
                err = self.stderr_text().strip()
                self.stop()
                raise RuntimeError(f"embedded MQTT broker on {self.host}:{self.port} {why}"
                                   + (f":\n{err}" if err else ""))
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after 5 s); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def broker_config(host: str, port: int) -> dict[str, Any]:
    """amqtt configuration: one TCP listener, every client accepted, no other plugins."""
    # amqtt splits "bind" at the last colon, so an IPv6 host goes in without brackets
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"adapters.broker.AcceptAllAuthPlugin": {}},
    }


def __getattr__(name: str) -> Any:
    # amqtt loads plugins by dotted path; the class is built on first use so that
    # importing this module for EmbeddedBroker does not import amqtt
    if name == "AcceptAllAuthPlugin":
        return _accept_all_plugin()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _accept_all_plugin() -> type[Any]:
    from amqtt.plugins.base import BaseAuthPlugin

    class AcceptAllAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
        """Accepts every client, like amqtt's AnonymousAuthPlugin, but without
        marking the session anonymous: amqtt drops an anonymous client's
        persistent session (and the QoS 1 messages queued for it) on disconnect,
        which would break ``watch --client-id``."""

        @dataclass
        class Config:
            pass

        async def authenticate(self, *, session: Any) -> bool:
            return True

    return AcceptAllAuthPlugin


async def serve(host: str, port: int, parent_pid: int) -> None:
    """Run the broker until SIGTERM/SIGINT or until the parent process is gone."""
    from amqtt.broker import Broker

    log = logging.getLogger("adapters.broker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(broker_config(host, port))
    await broker.start()
    print(f"{READY} {host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if os.getppid() != parent_pid:
                log.warning("parent process %d is gone; stopping", parent_pid)
                break
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.broker",
                                     description="Embedded MQTT 3.1.1 broker (amqtt), in memory.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is no longer the parent (default: the current parent)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parent_pid = args.parent_pid if args.parent_pid is not None else os.getppid()
    try:
        asyncio.run(serve(args.host, args.port, parent_pid))
    except Exception as exc:  # bind errors and the like: one line, a non-zero exit
        print(f"mqtt broker (amqtt) on {args.host}:{args.port} failed: {exc!r}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
