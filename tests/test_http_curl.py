"""The README's curl examples, run verbatim against the live HTTP port.

Only placeholders change: the port (8080 -> the test server's), ``<datastore id>`` and
``<agent id>`` (from the earlier commands' answers); the key is read by the commands
themselves from ``.data/api-key`` in a scratch working directory.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers.paths import REPO

SECTION = "## Over HTTP: curl, Connect and gRPC-Web"


def readme_curls() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        # a command runs from its `curl` line to the next (bash joins the rest itself)
        for chunk in re.split(r"\n(?=curl )", block.strip()):
            if chunk.startswith("curl "):
                commands.append(chunk)
    return commands


def run(command: str, cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_curl_examples_work_verbatim(
    http_url: str, new_key: Callable[..., str], tmp_path: Path
) -> None:
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "api-key").write_text(new_key() + "\n")
    port = http_url.rsplit(":", 1)[1]
    commands = readme_curls()
    assert len(commands) == 8
    ids: dict[str, str] = {}
    answers = []
    for readme_command in commands:
        command = readme_command.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        for placeholder, value in ids.items():
            command = command.replace(placeholder, value)
        assert "<" not in command.split("-d", 1)[-1].replace("<api key>", "")
        out = run(command, tmp_path)
        if "/readyz" in command:
            assert out == "ok\n"
            continue
        answer = json.loads(out)
        answers.append(answer)
        if "CreateDatastore" in command:
            ids["<datastore id>"] = answer["id"]
        elif "CreateAgent" in command:
            ids["<agent id>"] = answer["id"]
    created, ingested, by_datastore, agent, attached, by_agent, refused = answers
    assert ingested["results"][0]["status"] == "CREATED"
    assert [h["externalId"] for h in by_datastore["hits"]] == ["doc-1"]
    assert attached["agentId"] == agent["id"]
    assert by_agent["hits"] == by_datastore["hits"]
    assert created["similarityThreshold"] == 0.2
    assert refused == {
        "code": "unauthenticated",
        "message": "missing 'authorization: Bearer <api key>' metadata",
    }
