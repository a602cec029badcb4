"""adapters.config: the engine's TOML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.config import (
    DEFAULT_CONFIG,
    PROJECT_ROOT,
    ConfigError,
    EngineConfig,
    SessionSpec,
    load,
    sqlite_path,
)

LP = """
[[lp]]
name = "LP1"
host = "10.0.0.5"
port = 9878
sender_comp_id = "STP"
target_comp_id = "LP1"
"""

PLATFORM = """
[[platform]]
name = "PLATFORM"
port = 9880
sender_comp_id = "STP"
target_comp_id = "PLATFORM"
"""


def write(directory: Path, text: str, name: str = "engine.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# --- the shipped file ----------------------------------------------------------------


def test_shipped_config_loads() -> None:
    cfg = load(env={})
    assert isinstance(cfg, EngineConfig)
    assert cfg.path == DEFAULT_CONFIG
    assert cfg.database_url == f"sqlite+aiosqlite:///{PROJECT_ROOT / 'var' / 'engine' / 'stp.db'}"
    assert cfg.state_dir == PROJECT_ROOT / "var" / "engine"
    assert cfg.quickfix_dir == PROJECT_ROOT / "var" / "engine" / "quickfix"
    assert (cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_topic_prefix) == ("127.0.0.1", 1883, "fxstp")
    assert (cfg.log_level, cfg.log_format) == ("info", "json")
    assert (cfg.batch_max, cfg.queue_max) == (2000, 200_000)
    assert [s.name for s in cfg.lps] == ["LP1"] and [s.name for s in cfg.platforms] == ["PLATFORM"]
    lp, platform = cfg.sessions
    assert lp == SessionSpec(role="lp", name="LP1", host="127.0.0.1", port=9878,
                             sender_comp_id="STP", target_comp_id="LP1", begin_string="FIX.4.4",
                             heartbeat_interval=30)
    assert platform.role == "platform" and platform.port == 9880 and platform.key == "PLATFORM"
    assert cfg.reference_dir == PROJECT_ROOT / "config" / "reference"
    assert cfg.extra == {}


def test_shipped_config_by_explicit_path_is_the_same() -> None:
    assert load(DEFAULT_CONFIG, env={}) == load(env={})
    assert load(str(DEFAULT_CONFIG), env={}) == load(env={})


# --- defaults and paths --------------------------------------------------------------


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "config", "")
    cfg = load(path, env={})
    # database in var/engine under the project root (the parent of config/)
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'engine' / 'stp.db'}"
    assert cfg.state_dir == tmp_path / "var" / "engine"
    assert (cfg.mqtt_host, cfg.mqtt_port, cfg.log_level, cfg.log_format) == \
        ("127.0.0.1", 1883, "info", "json")
    assert (cfg.batch_max, cfg.queue_max) == (2000, 200_000)
    assert cfg.lps == () and cfg.platforms == () and cfg.sessions == ()
    assert cfg.reference_dir == PROJECT_ROOT / "config" / "reference"   # the project's own


def test_session_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, LP + PLATFORM), env={})
    lp, platform = cfg.sessions
    assert (lp.begin_string, lp.heartbeat_interval, lp.reconnect_interval) == ("FIX.4.4", 30, 2)
    assert lp.match_key == "exec_id"
    assert lp.username is None and lp.password is None and lp.host == "10.0.0.5"
    assert platform.host == "127.0.0.1"          # platforms need no host


def test_relative_sqlite_path_resolved_against_project_root(tmp_path: Path) -> None:
    path = write(tmp_path / "config", '[database]\nurl = "sqlite+aiosqlite:///data/x/stp.db"\n')
    cfg = load(path, env={})
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'x' / 'stp.db'}"
    assert sqlite_path(cfg.database_url) == tmp_path / "data" / "x" / "stp.db"
    # session state beside the database when [engine] state_dir is absent
    assert cfg.state_dir == tmp_path / "data" / "x"
    assert cfg.quickfix_dir == tmp_path / "data" / "x" / "quickfix"


def test_relative_paths_outside_a_config_folder_resolve_against_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere", '[database]\nurl = "sqlite:///db/stp.db"\n')
    cfg = load(path, env={})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'elsewhere' / 'db' / 'stp.db'}"
    assert cfg.state_dir == tmp_path / "elsewhere" / "db"


def test_absolute_sqlite_path_and_memory_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "abs" / "s.db"
    cfg = load(write(tmp_path, f'[database]\nurl = "sqlite+aiosqlite:///{absolute}"\n'), env={})
    assert cfg.database_url == f"sqlite+aiosqlite:///{absolute}"
    assert cfg.state_dir == tmp_path / "abs"
    memory = load(write(tmp_path, '[database]\nurl = "sqlite+aiosqlite:///:memory:"\n'), env={})
    assert memory.database_url == "sqlite+aiosqlite:///:memory:"
    assert memory.state_dir == tmp_path / "var" / "engine"


def test_explicit_state_dir_wins_over_database_location(tmp_path: Path) -> None:
    text = '[engine]\nstate_dir = "state/here"\n[database]\nurl = "sqlite:///db/stp.db"\n'
    cfg = load(write(tmp_path / "config", text), env={})
    assert cfg.state_dir == tmp_path / "state" / "here"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'db' / 'stp.db'}"


def test_state_dir_without_database_url_holds_the_database(tmp_path: Path) -> None:
    cfg = load(write(tmp_path / "config", '[engine]\nstate_dir = "st"\n'), env={})
    assert cfg.state_dir == tmp_path / "st"
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'st' / 'stp.db'}"


def test_postgresql_state_dir_defaults_to_var_engine(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://u@db:5432/stp"
    cfg = load(write(tmp_path / "config", f'[database]\nurl = "{url}"\n'), env={})
    assert cfg.database_url == url
    assert cfg.state_dir == tmp_path / "var" / "engine"


def test_values_from_the_file(tmp_path: Path) -> None:
    text = """
[engine]
batch_max = 50
queue_max = 1000
reference_dir = "/opt/ref"
[mqtt]
host = "broker"
port = 8883
topic_prefix = "x"
[logging]
level = "debug"
format = "console"
[custom]
a = 1
"""
    cfg = load(write(tmp_path, text), env={})
    assert (cfg.batch_max, cfg.queue_max) == (50, 1000)
    assert cfg.reference_dir == Path("/opt/ref")
    assert (cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_topic_prefix) == ("broker", 8883, "x")
    assert (cfg.log_level, cfg.log_format) == ("debug", "console")
    assert cfg.extra == {"custom": {"a": 1}}


# --- environment overrides -----------------------------------------------------------


def test_environment_overrides(tmp_path: Path) -> None:
    env = {"STP_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
           "STP_MQTT_HOST": "mqtt.example", "STP_MQTT_PORT": "1884", "STP_LOG_LEVEL": "warning"}
    cfg = load(env=env)
    assert cfg.database_url == env["STP_DATABASE_URL"]
    assert (cfg.mqtt_host, cfg.mqtt_port, cfg.log_level) == ("mqtt.example", 1884, "warning")
    assert cfg.state_dir == PROJECT_ROOT / "var" / "engine"


def test_relative_sqlite_url_from_environment_is_resolved(tmp_path: Path) -> None:
    path = write(tmp_path / "config", "")
    cfg = load(path, env={"STP_DATABASE_URL": "sqlite+aiosqlite:///other/e.db"})
    assert cfg.database_url == f"sqlite+aiosqlite:///{tmp_path / 'other' / 'e.db'}"
    assert cfg.state_dir == tmp_path / "other"


def test_empty_environment_values_do_not_override() -> None:
    env = {"STP_DATABASE_URL": "", "STP_MQTT_HOST": "", "STP_MQTT_PORT": "", "STP_LOG_LEVEL": ""}
    assert load(env=env) == load(env={})


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STP_LOG_LEVEL", "error")
    monkeypatch.setenv("STP_MQTT_PORT", "1999")
    cfg = load()
    assert cfg.log_level == "error" and cfg.mqtt_port == 1999
    assert load(env={}).log_level == "info"


# --- errors --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize("text", ["[engine\n", "a = \n", "[[lp]]\nname = LP1\n", "x = 1\nx = 2\n"])
def test_bad_toml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(write(tmp_path, text), env={})


@pytest.mark.parametrize("key", ["host", "port", "name", "sender_comp_id", "target_comp_id"])
def test_lp_missing_required_key(tmp_path: Path, key: str) -> None:
    text = "\n".join(line for line in LP.splitlines() if not line.startswith(f"{key} "))
    with pytest.raises(ConfigError, match=rf"\[\[lp\]\] #1: missing {key}"):
        load(write(tmp_path, text), env={})


def test_platform_missing_port(tmp_path: Path) -> None:
    text = "\n".join(line for line in PLATFORM.splitlines() if not line.startswith("port "))
    with pytest.raises(ConfigError, match=r"\[\[platform\]\] #1: missing port"):
        load(write(tmp_path, text), env={})


@pytest.mark.parametrize("section", [LP, PLATFORM])
def test_unknown_session_key(tmp_path: Path, section: str) -> None:
    with pytest.raises(ConfigError, match="unknown keys hearbeat_interval"):
        load(write(tmp_path, section + "hearbeat_interval = 10\n"), env={})


def test_role_is_not_a_settable_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown keys role"):
        load(write(tmp_path, LP + 'role = "platform"\n'), env={})


def test_duplicate_session_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        load(write(tmp_path, LP + LP.replace("9878", "9879")), env={})
    across = PLATFORM.replace('name = "PLATFORM"', 'name = "LP1"')
    with pytest.raises(ConfigError, match="unique"):
        load(write(tmp_path, LP + across), env={})


def test_two_platforms_on_one_port(tmp_path: Path) -> None:
    second = PLATFORM.replace('name = "PLATFORM"', 'name = "P2"')
    with pytest.raises(ConfigError, match="port of its own"):
        load(write(tmp_path, PLATFORM + second), env={})
    # an LP's port is the remote one: it may equal a platform's
    assert load(write(tmp_path, LP.replace("9878", "9880") + PLATFORM), env={}).sessions


@pytest.mark.parametrize("begin", ["FIX.4.3", "FIXT.1.1", "fix.4.4", ""])
def test_bad_begin_string(tmp_path: Path, begin: str) -> None:
    with pytest.raises(ConfigError, match="begin_string"):
        load(write(tmp_path, LP + f'begin_string = "{begin}"\n'), env={})


def test_fix42_begin_string_is_accepted(tmp_path: Path) -> None:
    assert load(write(tmp_path, LP + 'begin_string = "FIX.4.2"\n'), env={}).lps[0].begin_string == \
        "FIX.4.2"


@pytest.mark.parametrize("value", ["abc", "18 83", "1883.5"])
def test_bad_mqtt_port_from_environment(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="STP_MQTT_PORT"):
        load(env={"STP_MQTT_PORT": value})


def test_bad_mqtt_port_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port must be a number"):
        load(write(tmp_path, '[mqtt]\nport = "x"\n'), env={})


def test_the_embedded_broker_only_when_the_configuration_asks(tmp_path: Path) -> None:
    from adapters.mqtt import settings_from_config

    # the shipped file asks, for a first look on a fresh machine
    assert settings_from_config(load(env={})).embedded is True
    # a configuration naming a broker without asking never gets one (issue 3: the
    # engine took Mosquitto's port while it was down)
    named = load(write(tmp_path, '[mqtt]\nhost = "127.0.0.1"\nport = 1884\n'), env={})
    assert settings_from_config(named).embedded is False
    asked = load(write(tmp_path, "[mqtt]\nembedded = true\n"), env={})
    assert settings_from_config(asked).embedded is True
    assert settings_from_config(load(write(tmp_path, "[mqtt]\nembedded = false\n"), env={})).embedded is False


@pytest.mark.parametrize("value", ['"auto"', '"true"', "1"])
def test_embedded_is_true_or_false(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="embedded must be true"):
        load(write(tmp_path, f"[mqtt]\nembedded = {value}\n"), env={})


def test_request_id_retention(tmp_path: Path) -> None:
    from adapters.mqtt import settings_from_config

    assert settings_from_config(load(write(tmp_path, "[mqtt]\n"), env={})).request_id_retention_days == 30
    cfg = load(write(tmp_path, "[mqtt]\nrequest_id_retention_days = 0.5\n"), env={})
    assert settings_from_config(cfg).request_id_retention_days == 0.5
    for bad in ("0", "-1", '"7"', "true"):
        with pytest.raises(ConfigError, match="request_id_retention_days"):
            load(write(tmp_path, f"[mqtt]\nrequest_id_retention_days = {bad}\n"), env={})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_bad_batch_max_is_a_config_error(tmp_path: Path) -> None:
    try:
        load(write(tmp_path, '[engine]\nbatch_max = "lots"\n'), env={})
    except ConfigError:
        return
    except ValueError as exc:
        pytest.fail(f"plain ValueError, not ConfigError: {exc}")
    pytest.fail("accepted")


def test_posttrade_mode(tmp_path: Path) -> None:
    assert load(env={}).posttrade_mode == "process"                  # its own process by default
    path = write(tmp_path, '[engine]\nposttrade = "inline"\n')
    assert load(path, env={}).posttrade_mode == "inline"
    assert load(path, env={"STP_POSTTRADE": "process"}).posttrade_mode == "process"
    with pytest.raises(ConfigError, match="posttrade"):
        load(write(tmp_path, '[engine]\nposttrade = "thread"\n'), env={})
    assert load(env={}).posttrade_batch == 500
    assert load(write(tmp_path, "[engine]\nposttrade_batch = 2000\n"), env={}).posttrade_batch == 2000
    with pytest.raises(ConfigError, match="posttrade_batch"):
        load(write(tmp_path, "[engine]\nposttrade_batch = 0\n"), env={})


def test_max_message_bytes_defaults_to_1_mib_and_is_bounded(tmp_path: Path) -> None:
    assert load(write(tmp_path / "config", ""), env={}).max_message_bytes == 1024 * 1024
    assert load(write(tmp_path / "config", "[engine]\nmax_message_bytes = 65536\n"),
                env={}).max_message_bytes == 65536
    # above 8 MiB quickfix's CheckSum can overflow before fromApp sees the message
    for bad in ("0", "100", "8388609", "true", '"1MB"'):
        with pytest.raises(ConfigError, match="max_message_bytes"):
            load(write(tmp_path / "config", f"[engine]\nmax_message_bytes = {bad}\n"), env={})
