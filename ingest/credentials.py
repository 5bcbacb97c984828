"""Where a client finds its API key: the flag, then the environment, then the key file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from service.client import read_key_file

API_KEY_ENV = "RETRIEVAL_API_KEY"
DATA_DIR_ENV = "RETRIEVAL_DATA_DIR"
DEFAULT_DATA_DIR = Path(".data")


class MissingKey(Exception):
    """No API key was given and none is stored locally."""


def resolve_api_key(
    flag: str | None = None,
    key_file: Path | None = None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """The API key: ``flag``, else $RETRIEVAL_API_KEY, else ``key_file``, else the file the
    local server wrote on first start ($RETRIEVAL_DATA_DIR/api-key, default .data/api-key).
    """
    if flag:
        return flag.strip()
    if environ.get(API_KEY_ENV, "").strip():
        return environ[API_KEY_ENV].strip()
    path = key_file or Path(environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / "api-key"
    if path.is_file():
        key = read_key_file(path)
        if key:
            return key
    raise MissingKey(
        f"no API key: pass --api-key, set {API_KEY_ENV}, or point --key-file at a key "
        f"(looked for {path})"
    )
