"""First start on a fresh data directory: a local user and an API key, written to a file.

The key is shown only on a terminal; where stdout is a pipe or a log (a container,
a service manager), only the file's path is printed, so the key never lands in logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from service.core.identity import Identity, IssuedKey
from service.errors import NotFound
from service.models import Role

LOCAL_EMAIL = "local@localhost"


def write_key_file(path: Path, key: str) -> None:
    """Write the key readable by its owner only (0600), never world-readable, even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    path.chmod(0o600)


def ensure_local_key(identity: Identity, key_file: Path) -> IssuedKey | None:
    """Create the local user and key unless ``key_file`` exists; returns the new key."""
    if key_file.exists():
        return None
    try:
        user_id = identity.find_user(LOCAL_EMAIL)
    except NotFound:
        user_id = identity.create_user(LOCAL_EMAIL)
    issued = identity.create_key(user_id, Role.USER, name="local quickstart key")
    write_key_file(key_file, issued.key)
    return issued


def announce_local_key(issued: IssuedKey, key_file: Path, out: TextIO) -> None:
    """Tell the operator about a new local key: the key itself only when ``out`` is a terminal."""
    if out.isatty():
        print(
            f"Created local user and API key (shown once, saved to {key_file}, mode 0600):\n"
            f"  {issued.key}",
            file=out,
            flush=True,
        )
    else:
        print(
            f"Created local user and API key; it is in {key_file} (mode 0600), "
            "not printed because stdout is not a terminal",
            file=out,
            flush=True,
        )
