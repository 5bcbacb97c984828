"""First start on a fresh data directory: a local user and an API key, printed once."""

from __future__ import annotations

import os
from pathlib import Path

from service.core.identity import Identity, IssuedKey
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
    except Exception:
        user_id = identity.create_user(LOCAL_EMAIL)
    issued = identity.create_key(user_id, Role.USER, name="local quickstart key")
    write_key_file(key_file, issued.key)
    return issued
