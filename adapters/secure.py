"""Secrets out of clear text: passwords from the environment or a file,
redacted in what is kept, and state files only the engine's user can read.

- ``redact``: the password fields of a FIX message (Password 554,
  NewPassword 925, EncryptedPassword 1402, EncryptedNewPassword 1404) with
  their values replaced by ``***``; applied to the admin messages the gateway
  hands to the journal.
- ``restrict_state``: umask 077 for the process (every file it creates from
  then on is 0600, every directory 0700) and the same modes put on the state
  that exists already (the SQLite database and its side files, quickfix's
  stores, logs and generated settings), which older versions created 0644.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

PASSWORD_TAGS = (554, 925, 1402, 1404)
REDACTED = "***"
_PASSWORD_FIELD = re.compile("(\x01(?:" + "|".join(str(t) for t in PASSWORD_TAGS) + ")=)[^\x01]*")


def redact(text: str) -> str:
    """``text`` (a FIX message) with every password field's value replaced."""
    if "\x01554=" not in text and "\x01925=" not in text and "\x01140" not in text:
        return text
    return _PASSWORD_FIELD.sub(r"\g<1>" + REDACTED, text)


def restrict_state(paths: list[Path]) -> None:
    """umask 077, and owner-only modes on the state under ``paths`` (files or
    directories; missing ones are skipped)."""
    os.umask(0o077)
    for path in paths:
        _restrict(path)


def _restrict(path: Path) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        with contextlib.suppress(OSError):
            for child in path.iterdir():
                _restrict(child)
    elif stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)


def sqlite_state_files(db_file: Path) -> list[Path]:
    """The database file and the files SQLite and the engine keep beside it."""
    parent, name = db_file.parent, db_file.name
    if not parent.is_dir():
        return [db_file]
    return [p for p in parent.iterdir() if p.name == name or p.name.startswith(name + "-")
            or p.name.startswith(name + ".")] or [db_file]
