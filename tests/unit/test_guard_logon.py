"""The pre-logon guard's verdict on a connection's first bytes, and the
secrets helpers (pure: no sockets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from adapters.config import ConfigError, SessionSpec, load
from adapters.fix.guard import Passed, Refused, check_logon
from adapters.secure import redact, restrict_state
from stp.fixwire import Framer, finish, parse_frame
from tests.integration.test_guard import logon

SPEC = SessionSpec(role="platform", name="PLATFORM", port=1, sender_comp_id="STP", target_comp_id="PLATFORM",
                   username="desk", password="s3cret")


def test_a_good_logon_passes_without_its_password_and_reframed() -> None:
    first = logon()
    data = first + b"8=FIX.4.4\x019=5\x01"           # the start of the next message
    verdict = check_logon(data, [SPEC])
    assert isinstance(verdict, Passed) and verdict.spec is SPEC
    assert b"554=" not in verdict.logon and b"s3cret" not in verdict.logon
    assert b"\x01553=desk\x01" in verdict.logon and b"\x01141=Y\x01" in verdict.logon
    framer = Framer()
    framer.feed(verdict.logon)
    [(frame, error)] = list(framer.frames())
    assert error is None and frame == verdict.logon               # BodyLength and CheckSum exact
    original = [f for f in parse_frame(first).fields if f[0] not in (9, 10, 554)]
    assert [f for f in parse_frame(frame).fields if f[0] not in (9, 10)] == original
    assert verdict.rest == b"8=FIX.4.4\x019=5\x01"


@pytest.mark.parametrize(("data", "reason"), [
    (logon(password="wrong"), "invalid username or password"),
    (logon(password=None), "invalid username or password"),
    (logon(user="other"), "invalid username or password"),
    (logon(sender="INTRUDER"), "no session"),
    (logon(target="OTHER"), "no session"),
    (logon(begin="FIX.4.2"), "no session"),
    (logon()[:-4] + b"000\x01", "CheckSum"),
    (finish("FIX.4.4", "35=0\x0134=1\x0149=PLATFORM\x0156=STP\x01"), "not a Logon"),
    (b"GET / HTTP/1.1\r\n", "does not start with 8=FIX"),
    (b"8=FIX.4.4" + b"x" * 5000, "garbled"),
    (b"8=FIX.4.4\x019=99999999\x01", "exceeds"),
    (b"8=FIX.4.4\x019=100\x01" + b"x" * 5000, "garbled"),
])
def test_anything_else_is_refused(data: bytes, reason: str) -> None:
    verdict = check_logon(data, [SPEC])
    assert isinstance(verdict, Refused), verdict
    assert reason in verdict.reason


def test_bytes_without_a_message_are_bounded() -> None:
    # more than the bound without SOH: refused, whatever comes after
    verdict = check_logon(b"8=FIX.4.4\x019=3000\x01" + b"y" * 4200, [SPEC], max_bytes=4096)
    assert isinstance(verdict, Refused)
    # a Logon still arriving: wait
    assert check_logon(logon()[:40], [SPEC]) is None
    assert check_logon(b"8=FI", [SPEC]) is None


def test_no_credentials_configured_needs_none() -> None:
    spec = SessionSpec(role="platform", name="P", port=1, sender_comp_id="STP", target_comp_id="PLATFORM")
    assert isinstance(check_logon(logon(password=None, user=None), [spec]), Passed)
    passed = check_logon(logon(password="anything"), [spec])
    assert isinstance(passed, Passed) and b"anything" not in passed.logon


def test_redact() -> None:
    text = "8=FIX.4.4\x019=1\x0135=A\x01553=desk\x01554=s3cret\x01925=n3w\x0110=000\x01"
    assert redact(text) == "8=FIX.4.4\x019=1\x0135=A\x01553=desk\x01554=***\x01925=***\x0110=000\x01"
    assert redact("8=FIX.4.4\x0135=8\x0131=1.1\x01") == "8=FIX.4.4\x0135=8\x0131=1.1\x01"


CFG = """
[database]
url = "sqlite+aiosqlite:///{tmp}/stp.db"
[mqtt]
{mqtt}
[[lp]]
name = "LP1"
host = "127.0.0.1"
port = 1
sender_comp_id = "STP"
target_comp_id = "LP1"
{lp}
[[platform]]
name = "PLATFORM"
port = 2
sender_comp_id = "STP"
target_comp_id = "PLATFORM"
{platform}
"""


def _cfg(tmp_path: Path, lp: str = "", platform: str = "", mqtt: str = "") -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(CFG.format(tmp=tmp_path, lp=lp, platform=platform, mqtt=mqtt))
    return path


def test_passwords_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "lp1"
    secret_file.write_text("from-file\n")
    cfg = load(_cfg(tmp_path, lp=f'password_file = "{secret_file}"', platform='password_env = "PF_PW"',
                    mqtt='password_env = "MQ_PW"'), env={"PF_PW": "from-env", "MQ_PW": "mq-env"})
    assert cfg.lps[0].password == "from-file"
    assert cfg.platforms[0].password == "from-env"
    assert cfg.mqtt_extra["password"] == "mq-env"
    assert "from-env" not in repr(cfg) and "from-file" not in repr(cfg) and "mq-env" not in repr(cfg)
    cfg = load(_cfg(tmp_path, mqtt=f'password_file = "{secret_file}"'), env={})
    assert cfg.mqtt_extra["password"] == "from-file"


@pytest.mark.parametrize(("lp", "env", "message"), [
    ('password_env = "NOPE"', {}, "NOPE is not set"),
    ('password_file = "/nonexistent/secret"', {}, "cannot read"),
    ('password = "x"\npassword_env = "X"', {"X": "y"}, "give one of"),
])
def test_a_missing_secret_is_a_clear_error(tmp_path: Path, lp: str, env: dict[str, str],
                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_cfg(tmp_path, lp=lp), env=env)


def test_restrict_state_makes_files_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        (tmp_path / "qf" / "log").mkdir(parents=True)
        (tmp_path / "qf" / "log" / "x.log").write_text("x")
        (tmp_path / "stp.db").write_text("x")
        restrict_state([tmp_path / "qf", tmp_path / "stp.db"])
        (tmp_path / "qf" / "new.cfg").write_text("x")          # created after: umask 077
        for path in (tmp_path / "qf" / "log" / "x.log", tmp_path / "stp.db", tmp_path / "qf" / "new.cfg"):
            assert path.stat().st_mode & 0o777 == 0o600, path
        assert (tmp_path / "qf" / "log").stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)
