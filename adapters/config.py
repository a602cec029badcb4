"""The engine's TOML configuration, with defaults and environment overrides.

Environment variables override the file: ``STP_DATABASE_URL`` ([database]
url), ``STP_MQTT_HOST`` and ``STP_MQTT_PORT`` ([mqtt]), ``STP_LOG_LEVEL``
([logging] level).  Relative paths are resolved against the directory that
holds the configuration file's ``config/`` parent when the file lives in a
``config/`` folder (the project layout), else against the file's directory.
Session state (quickfix stores and logs) lives beside the database unless
``[engine] state_dir`` says otherwise, so two configurations never share it.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stp.sessions import DAY_NAMES, SessionSchedule, daily_reset_end

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "engine.toml"


class ConfigError(ValueError):
    pass


def engine_subcommand(subcommand: str, cfg: EngineConfig, log_level: str | None = None) -> list[str]:
    """The command line of one of the engine's child processes
    (``run_engine.py [--log-level L] SUBCOMMAND [--config FILE]``)."""
    cmd = [sys.executable, str(PROJECT_ROOT / "run_engine.py")]
    if log_level:
        cmd += ["--log-level", log_level]
    cmd.append(subcommand)
    if cfg.path is not None:
        cmd += ["--config", str(cfg.path)]
    return cmd


# [engine] posttrade: in a child process of the engine's, in the engine's event
# loop, or in a process run separately (`run_engine.py posttrade --standalone`)
POSTTRADE_MODES = ("process", "inline", "external")
# [engine] max_message_bytes at most: quickfix's CheckSum sum overflows from 8.4 MB
# (adapters/fix/oversize.py), so a larger message is not always seen by fromApp
MAX_MESSAGE_BYTES_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """One FIX session the engine runs with quickfix."""

    role: str                    # "lp" (engine initiates) or "platform" (engine accepts)
    name: str
    port: int
    sender_comp_id: str          # ours
    target_comp_id: str          # theirs
    begin_string: str = "FIX.4.4"
    host: str = "127.0.0.1"      # LPs: where to connect
    heartbeat_interval: int = 30
    reconnect_interval: int = 2
    username: str | None = None  # LP: sent on Logon; platform: required on Logon
    password: str | None = field(default=None, repr=False)   # or password_env / password_file
    # the session schedule (README "Session schedules"; validated by session_schedule):
    # daily from start_time to end_time in time_zone (end_time left out or equal:
    # a daily reset at start_time), weekly from start_day to end_day, or non_stop;
    # nothing given: the FX day, a daily reset at 17:00 America/New_York
    start_time: str | None = None
    end_time: str | None = None
    time_zone: str | None = None
    start_day: str | None = None
    end_day: str | None = None
    non_stop: bool = False
    match_key: str = "exec_id"   # platform: how its records are matched (exec_id, cl_ord_id, order_id)
    confirms: str | None = None  # platform: the LP session it reports (default: every LP)
    house_account: str | None = None  # LP: where its unallocated fills book (default HOUSE-<name>)

    @property
    def key(self) -> str:
        """The session's name in the journal and the database."""
        return self.name


@dataclass(frozen=True, slots=True)
class EngineConfig:
    path: Path | None
    database_url: str
    state_dir: Path
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_topic_prefix: str = "fxstp"
    mqtt_extra: dict[str, Any] = field(default_factory=dict, repr=False)  # client_id, username, password, tls
    log_level: str = "info"
    log_format: str = "json"
    batch_max: int = 2000               # messages per intake transaction at most
    queue_max: int = 200_000            # inbound messages buffered before quickfix is slowed
    lps: tuple[SessionSpec, ...] = ()
    platforms: tuple[SessionSpec, ...] = ()
    reference_dir: Path = PROJECT_ROOT / "config" / "reference"
    match_window_s: float = 30.0          # [confirm] window_seconds
    match_price_tolerance: str = "0.00001"
    match_qty_tolerance: str = "0"
    escalate_before_minutes: float = 60.0  # [breaks]: re-publish unresolved breaks this near their cut-off
    posttrade_mode: str = "process"     # [engine] posttrade: "process" (its own), "inline" or "external"
    posttrade_batch: int = 500          # [engine] posttrade_batch: fills per post-trade transaction
    posttrade_poll_ms: int = 200        # [engine] posttrade_poll_ms: a standalone post-trade's database poll
    max_message_bytes: int = 1024 * 1024  # [engine] max_message_bytes: larger inbound messages get a Reject
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sessions(self) -> tuple[SessionSpec, ...]:
        return self.lps + self.platforms

    @property
    def quickfix_dir(self) -> Path:
        return self.state_dir / "quickfix"


def _base_dir(path: Path) -> Path:
    parent = path.resolve().parent
    return parent.parent if parent.name == "config" else parent


def _resolve(base: Path, value: str | os.PathLike[str]) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _resolve_sqlite_url(base: Path, url: str) -> str:
    """Make a relative SQLite path absolute (sqlite+aiosqlite:///relative/path)."""
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
                return prefix + str(base / rest)
    return url


def sqlite_path(url: str) -> Path | None:
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix) and not url.endswith(":memory:"):
            return Path(url[len(prefix):].split("?", 1)[0])
    return None


def secret(section: dict[str, Any], key: str, where: str, env: dict[str, str]) -> str | None:
    """``key`` from the section itself, or from the environment variable
    named by ``key_env``, or from the file named by ``key_file`` (its
    content without the final newline): at most one of the three."""
    given = [k for k in (key, f"{key}_env", f"{key}_file") if k in section]
    if len(given) > 1:
        raise ConfigError(f"{where}: give one of {', '.join(given)}")
    if not given:
        return None
    name = given[0]
    value = section[name]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name} must be a non-empty string")
    if name == key:
        return value
    if name.endswith("_env"):
        if not env.get(value):
            raise ConfigError(f"{where}: {name}: the environment variable {value} is not set")
        return env[value]
    try:
        text = Path(value).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: {name}: cannot read {value}: {exc.strerror}") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise ConfigError(f"{where}: {name}: {value} is empty")
    return text


def _session(role: str, raw: dict[str, Any], index: int, env: dict[str, str] | None = None) -> SessionSpec:
    where = f"[[{role}]] #{index + 1}"
    raw = dict(raw)
    password = secret(raw, "password", f"[[{role}]] {raw.get('name', index + 1)}", env or {})
    for key in ("password", "password_env", "password_file"):
        raw.pop(key, None)
    if password is not None:
        raw["password"] = password
    required = ["name", "port", "sender_comp_id", "target_comp_id"] + (["host"] if role == "lp" else [])
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    known = set(SessionSpec.__slots__) - {"role"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    if raw.get("begin_string", "FIX.4.4") not in ("FIX.4.2", "FIX.4.4"):
        raise ConfigError(f"{where}: begin_string must be FIX.4.2 or FIX.4.4")
    try:
        return SessionSpec(role=role, **{k: raw[k] for k in raw})
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _clock_time(where: str, key: str, value: Any) -> dtime:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a time \"HH:MM:SS\", got {value!r}")
    try:
        parsed = dtime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{where}: {key} must be a time \"HH:MM:SS\", got {value!r}") from None
    if parsed.tzinfo is not None or parsed.microsecond:
        raise ConfigError(f"{where}: {key} is a wall-clock time in time_zone, whole seconds: {value!r}")
    return parsed


def _day(where: str, key: str, value: Any) -> int:
    text = value.strip().lower() if isinstance(value, str) else ""
    for i, name in enumerate(DAY_NAMES):
        if len(text) >= 3 and name.startswith(text):
            return i + 1
    raise ConfigError(f"{where}: {key} must be a day of the week (sunday .. saturday), got {value!r}")


def session_schedule(spec: SessionSpec) -> SessionSchedule:
    """The session's schedule in quickfix's terms (README: Session schedules)."""
    where = f"[[{spec.role}]] {spec.name}"
    if not isinstance(spec.non_stop, bool):
        raise ConfigError(f"{where}: non_stop must be true or false")
    given = [k for k in ("start_time", "end_time", "time_zone", "start_day", "end_day")
             if getattr(spec, k) is not None]
    if spec.non_stop:
        if given:
            raise ConfigError(f"{where}: non_stop = true never resets: leave out {', '.join(given)}")
        return SessionSchedule(non_stop=True, zone="UTC")
    if spec.end_time is not None and spec.start_time is None:
        raise ConfigError(f"{where}: end_time needs a start_time")
    if (spec.start_day is None) != (spec.end_day is None):
        raise ConfigError(f"{where}: start_day and end_day go together (a weekly session)")
    if spec.start_time is None:
        if spec.start_day is not None:
            raise ConfigError(f"{where}: a weekly session needs start_time and end_time")
        start = dtime(17, 0, 0)
        zone = spec.time_zone or "America/New_York"
    else:
        start = _clock_time(where, "start_time", spec.start_time)
        zone = spec.time_zone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: time_zone {zone!r} is not an IANA time zone "
                          "(e.g. America/New_York, Europe/London, UTC)") from None
    end = start if spec.end_time is None else _clock_time(where, "end_time", spec.end_time)
    if spec.start_day is not None:
        start_day, end_day = _day(where, "start_day", spec.start_day), _day(where, "end_day", spec.end_day)
        if start_day == end_day:
            raise ConfigError(f"{where}: start_day and end_day must differ (a weekly session from one "
                              "day to another; a daily session has neither)")
        if spec.end_time is None:
            raise ConfigError(f"{where}: a weekly session needs end_time")
        return SessionSchedule(start, end, zone, start_day, end_day)
    if end == start:
        end = daily_reset_end(start)     # quickfix resets StartTime == EndTime at midnight instead
    return SessionSchedule(start, end, zone)


def gateway_time_zone(cfg: EngineConfig) -> str:
    """The gateway process's time zone (TZ): the one zone other than UTC the
    sessions use, else UTC.  quickfix 1.16 (C++) has no per-session
    TimeZone, only UseLocalTime=Y, which reads the process's zone."""
    zones = {sch.zone for sch in (session_schedule(s) for s in cfg.sessions) if not sch.utc}
    return next(iter(zones)) if zones else "UTC"


def _positive_int(section: dict[str, Any], key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"[engine] {key} must be a positive integer, got {value!r}")
    return value


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> EngineConfig:
    env = dict(os.environ) if env is None else env
    file = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    base = _base_dir(file)
    engine = data.get("engine", {})
    db = data.get("database", {})
    mqtt = data.get("mqtt", {})
    logging_ = data.get("logging", {})
    state_dir = _resolve(base, engine.get("state_dir", "var/engine"))
    url = env.get("STP_DATABASE_URL") or db.get("url") or f"sqlite+aiosqlite:///{state_dir / 'stp.db'}"
    url = _resolve_sqlite_url(base, url)
    if "state_dir" not in engine and (db_file := sqlite_path(url)) is not None:
        state_dir = db_file.parent          # session state beside the database
    lps = tuple(_session("lp", raw, i, env) for i, raw in enumerate(data.get("lp", [])))
    platforms = tuple(_session("platform", raw, i, env) for i, raw in enumerate(data.get("platform", [])))
    lp_names = {s.name for s in lps}
    for spec in platforms:
        if spec.match_key not in ("exec_id", "cl_ord_id", "order_id"):
            raise ConfigError(f"[[platform]] {spec.name}: match_key must be exec_id, cl_ord_id or order_id")
        if spec.confirms is not None and spec.confirms not in lp_names:
            raise ConfigError(f"[[platform]] {spec.name}: confirms names no [[lp]] ({spec.confirms})")
    for spec in platforms:
        if spec.house_account is not None:
            raise ConfigError(f"[[platform]] {spec.name}: house_account is for [[lp]] sessions")
    for spec in lps:
        if spec.house_account is not None and (not isinstance(spec.house_account, str)
                                               or not spec.house_account.strip()
                                               or len(spec.house_account) > 64):
            raise ConfigError(f"[[lp]] {spec.name}: house_account must be an account id "
                              f"(text, at most 64 characters)")
    names = [s.name for s in lps + platforms]
    if len(set(names)) != len(names):
        raise ConfigError("session names must be unique across [[lp]] and [[platform]]")
    ports = [s.port for s in platforms]
    if len(set(ports)) != len(ports):
        raise ConfigError("each [[platform]] needs a port of its own")
    try:
        mqtt_port = int(env.get("STP_MQTT_PORT") or mqtt.get("port", 1883))
    except ValueError:
        raise ConfigError("STP_MQTT_PORT / [mqtt] port must be a number") from None
    if not isinstance(mqtt.get("embedded", False), bool):
        raise ConfigError("[mqtt] embedded must be true (start the embedded broker when nothing listens on "
                          "the loopback host and port) or false (never; the default)")
    retention = mqtt.get("request_id_retention_days", 30)
    if isinstance(retention, bool) or not isinstance(retention, int | float) or not retention > 0:
        raise ConfigError("[mqtt] request_id_retention_days must be a number of days above 0")
    batch_max = _positive_int(engine, "batch_max", 2000)
    posttrade_mode = env.get("STP_POSTTRADE") or engine.get("posttrade", "process")
    if posttrade_mode not in POSTTRADE_MODES:
        raise ConfigError('[engine] posttrade must be "process", "inline" or "external"')
    queue_max = _positive_int(engine, "queue_max", 200_000)
    max_message_bytes = _positive_int(engine, "max_message_bytes", 1024 * 1024)
    if not 4096 <= max_message_bytes <= MAX_MESSAGE_BYTES_LIMIT:
        raise ConfigError(f"[engine] max_message_bytes must be from 4096 to {MAX_MESSAGE_BYTES_LIMIT}, "
                          f"got {max_message_bytes}")
    zones: set[str] = set()
    for spec in lps + platforms:
        if len(spec.name) > 64:
            raise ConfigError(f"session name {spec.name[:20]!r}... is longer than 64 characters")
        schedule = session_schedule(spec)
        if not schedule.utc:
            zones.add(schedule.zone)
    if len(zones) > 1:
        raise ConfigError(f"sessions in more than one time zone ({', '.join(sorted(zones))}): quickfix "
                          "1.16 has no per-session TimeZone (only UseLocalTime, the gateway's zone); "
                          "give the others in UTC or in the same zone")
    return EngineConfig(
        path=file, database_url=url, state_dir=state_dir,
        mqtt_host=env.get("STP_MQTT_HOST") or mqtt.get("host", "127.0.0.1"), mqtt_port=mqtt_port,
        mqtt_topic_prefix=mqtt.get("topic_prefix", "fxstp"),
        mqtt_extra={k: v for k, v in {
            **{k: mqtt[k] for k in ("client_id", "username", "password", "tls", "ca_file", "enabled",
                                    "embedded", "request_id_retention_days") if k in mqtt},
            "username": env.get("STP_MQTT_USERNAME") or mqtt.get("username"),
            "password": env.get("STP_MQTT_PASSWORD") or secret(mqtt, "password", "[mqtt]", env)}.items()
            if v is not None},
        log_level=env.get("STP_LOG_LEVEL") or logging_.get("level", "info"),
        log_format=logging_.get("format", "json"),
        batch_max=batch_max, queue_max=queue_max, posttrade_mode=posttrade_mode,
        posttrade_batch=_positive_int(engine, "posttrade_batch", 500),
        posttrade_poll_ms=_positive_int(engine, "posttrade_poll_ms", 200),
        max_message_bytes=max_message_bytes,
        lps=lps, platforms=platforms,
        reference_dir=(_resolve(base, engine["reference_dir"]) if "reference_dir" in engine
                       else PROJECT_ROOT / "config" / "reference"),
        match_window_s=float(data.get("confirm", {}).get("window_seconds", 30)),
        match_price_tolerance=str(data.get("confirm", {}).get("price_tolerance", "0.00001")),
        match_qty_tolerance=str(data.get("confirm", {}).get("qty_tolerance", "0")),
        escalate_before_minutes=_minutes(data.get("breaks", {}), "escalate_before_minutes", 60.0),
        extra={k: v for k, v in data.items()
               if k not in ("engine", "database", "mqtt", "logging", "lp", "platform", "confirm", "breaks")})


def _minutes(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"[breaks] {key} must be a number of minutes >= 0, got {value!r}")
    return float(value)
