"""A child process the engine supervises: the FIX gateway and post-trade.

Both are ``run_engine.py gateway|posttrade --config FILE``
(``adapters.config.engine_subcommand``), started by the engine, watched,
started again when they die and stopped with the engine.  That part is the
same for both and lives here, once:

- spawn: an asyncio subprocess whose stdin is a pipe (its closing tells the
  child the engine is gone), stdout a pipe to the owner's protocol if it
  reads one, stderr the engine's;
- restart: a child that dies is started again after the delays of a
  ``stp.backoff.Backoff``; a child that ran ``healthy_s`` or longer before
  it died starts the backoff over (a crash loop waits longer and longer, a
  child that died after running well does not inherit those delays);
- stop: ask the child to stop (by default: close its stdin), wait
  ``stop_grace`` seconds, then kill it;
- log every exit that was not asked for, every failed (re)start, every kill.

What a child means stays with its owner (``launch``: spawn and whatever
makes the child up, such as the gateway's start frame and its ``ready``;
``before_restart``: what must happen between two children, such as the
intake committing what the dead gateway delivered and its poison check;
``ask_to_stop``): adapters/fix/gateway.py and app/posttrade_process.py.

A supervisor runs one child at a time and is started once: after ``stop``
(or a start that failed for good) it starts nothing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from stp.backoff import Backoff

log = structlog.get_logger("engine.child")


class ChildProtocol(asyncio.SubprocessProtocol):
    """A child's end as the event loop sees it: ``exited`` when the process
    has exited (its status), ``finished`` when moreover everything it wrote
    has been read.  Subclass it to read what the child writes."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # subprocess_exec gives a SubprocessTransport

    def process_exited(self) -> None:
        if not self.exited.done() and self.transport is not None:
            self.exited.set_result(self.transport.get_returncode() or 0)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


class ChildSupervisor:
    """Spawn, watch, restart and stop one child process (see the module)."""

    def __init__(self, name: str, command: Callable[[], Sequence[str]], *, restart: Backoff,
                 stop_grace: float, healthy_s: float = 0.0,
                 protocol: Callable[[], ChildProtocol] = ChildProtocol, read_stdout: bool = False,
                 env: Mapping[str, str] | None = None,
                 launch: Callable[[], Awaitable[Any]] | None = None,
                 before_restart: Callable[[], Awaitable[None]] | None = None,
                 ask_to_stop: Callable[[], None] | None = None,
                 discard_wait: float = 5.0, logger: Any = None) -> None:
        self.name = name                    # the log events' prefix: <name>_died, ...
        self.command = command
        self.restart = restart
        self.stop_grace = stop_grace
        self.healthy_s = healthy_s
        self.read_stdout = read_stdout
        self.env = env                      # added to the engine's environment
        self.discard_wait = discard_wait    # how long a failed start's output is waited for
        self.log = logger if logger is not None else log
        self._protocol_factory = protocol
        self._launch = launch or self.spawn
        self._before_restart = before_restart
        self._ask_to_stop = ask_to_stop or self.close_stdin
        self.transport: asyncio.SubprocessTransport | None = None   # the current (or last) child
        self.protocol: ChildProtocol | None = None
        self.restarts = 0                   # deaths not asked for
        self.exit_code: int | None = None   # the last child's, once it exited
        self.stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._up_since = 0.0

    @property
    def pid(self) -> int | None:
        return self.transport.get_pid() if self.transport is not None else None

    async def spawn(self) -> ChildProtocol:
        """Start the child process (the default ``launch``)."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            self._protocol_factory, *self.command(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if self.read_stdout else None, stderr=None,
            env=None if self.env is None else {**os.environ, **self.env})
        self.transport, self.protocol = transport, protocol
        return protocol

    def write(self, data: bytes) -> bool:
        """Write to the running child's stdin; False if there is none to write to."""
        transport = self.transport
        if transport is None or transport.get_returncode() is not None:
            return False
        stdin = transport.get_pipe_transport(0)
        if stdin is None or stdin.is_closing():
            return False
        stdin.write(data)  # type: ignore[attr-defined]  # pipe 0 (stdin) is a WriteTransport
        return True

    def close_stdin(self) -> None:
        """The default way to ask a child to stop: it sees end of file."""
        stdin = self.transport.get_pipe_transport(0) if self.transport is not None else None
        if stdin is not None:
            stdin.close()

    async def start(self, attempts: int = 1, retry: Backoff | None = None,
                    retry_on: tuple[type[BaseException], ...] = (Exception,)) -> Any:
        """Launch the child and watch it; returns what ``launch`` returned.  A
        launch that fails with ``retry_on`` is tried up to ``attempts`` times,
        ``retry``'s delays apart.  If it fails for good (or is cancelled),
        nothing is left running."""
        try:
            result = await self._start(attempts, retry or Backoff(0.5, 5.0), retry_on)
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        self._watch = asyncio.create_task(self._supervise(), name=f"{self.name}-watch")
        return result

    async def _start(self, attempts: int, retry: Backoff, retry_on: tuple[type[BaseException], ...]) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt()
            except retry_on as exc:
                if attempt >= attempts or self.stopping:
                    raise
                delay = retry.next()
                self.log.warning(f"{self.name}_start_failed", attempt=attempt, error=str(exc)[:300],
                                 retry_in_s=delay)
                await asyncio.sleep(delay)

    async def _attempt(self) -> Any:
        try:
            result = await self._launch()
        except Exception:
            await self._discard()
            raise
        self._up_since = asyncio.get_running_loop().time()
        return result

    async def _discard(self) -> None:
        """A child whose launch failed: killed if it still runs, what it wrote
        read (``finished``, at most ``discard_wait``), its transport closed."""
        protocol, transport = self.protocol, self.transport
        if protocol is None or transport is None:
            return
        if not protocol.exited.done():
            with contextlib.suppress(ProcessLookupError):
                transport.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.finished), self.discard_wait)
        transport.close()
        if protocol.exited.done():
            self.exit_code = protocol.exited.result()

    async def _supervise(self) -> None:
        """A child that dies is started again: after the backoff's delay, then
        ``before_restart``; a restart that fails waits the next delay."""
        loop = asyncio.get_running_loop()
        while True:
            protocol, transport = self.protocol, self.transport
            assert protocol is not None and transport is not None
            # shielded: cancelling the watch must not cancel what stop() waits on;
            # finished: what the child wrote before it died has been read too
            await asyncio.shield(protocol.finished)
            if self.stopping:
                return
            self.exit_code = protocol.exited.result() if protocol.exited.done() else None
            up = loop.time() - self._up_since
            if up >= self.healthy_s:
                self.restart.reset()
            self.restarts += 1
            delay = self.restart.next()
            self.log.error(f"{self.name}_died", pid=transport.get_pid(), returncode=self.exit_code,
                           restarts=self.restarts, up_s=round(up, 1), restart_in_s=delay)
            transport.close()
            while True:
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._before_restart is not None and not self.stopping:
                    try:
                        await self._before_restart()
                    except Exception as exc:        # never the end of the restarts
                        self.log.error(f"{self.name}_before_restart_failed", error=repr(exc)[:300])
                if self.stopping:
                    return
                try:
                    await self._attempt()
                    break
                except Exception as exc:
                    delay = self.restart.next()
                    self.log.error(f"{self.name}_restart_failed", error=str(exc)[:300], retry_in_s=delay)

    async def stop(self, grace: float | None = None) -> int | None:
        """Stop watching, ask the child to stop, kill it after ``grace``
        seconds (``stop_grace``); its exit status (None if none ever ran)."""
        self.stopping = True
        watch, self._watch = self._watch, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            await asyncio.wait([watch])
        protocol, transport = self.protocol, self.transport
        if protocol is None or transport is None:
            return None
        if not protocol.exited.done():
            self._ask_to_stop()
            grace = self.stop_grace if grace is None else grace
            try:
                await asyncio.wait_for(asyncio.shield(protocol.exited), grace)
            except TimeoutError:
                self.log.error(f"{self.name}_stop_timeout", pid=transport.get_pid(), timeout_s=grace)
                with contextlib.suppress(ProcessLookupError):
                    transport.kill()
                await asyncio.shield(protocol.exited)
        transport.close()
        self.exit_code = protocol.exited.result()
        return self.exit_code

    async def __aenter__(self) -> ChildSupervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # shielded: a second cancellation while stopping leaves the stop running, not half done
        await asyncio.shield(self.stop())
