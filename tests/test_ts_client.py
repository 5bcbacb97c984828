"""The TypeScript client's node:test suite, run by Node against this session's live server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable

from tests.helpers.paths import REPO

TS_CLIENT = REPO / "clients" / "typescript"


def built_client_is_current() -> None:
    """make install runs `npm ci` and `npm run build`; say so rather than fail obscurely."""
    dist = TS_CLIENT / "dist" / "index.js"
    assert (TS_CLIENT / "node_modules").is_dir(), "clients/typescript: run `make install` (npm ci)"
    assert dist.exists(), "clients/typescript/dist is missing: run `make install` (npm run build)"
    newest_source = max(p.stat().st_mtime for p in (TS_CLIENT / "src").rglob("*.ts"))
    assert dist.stat().st_mtime >= newest_source, "clients/typescript/dist is stale: npm run build"


def test_typescript_client_suite_passes_over_every_protocol(
    http_url: str, target: str, new_key: Callable[..., str]
) -> None:
    built_client_is_current()
    node = shutil.which("node")
    assert node is not None, "Node >= 18 must be on PATH"
    env = {
        **os.environ,
        "RETRIEVAL_TEST_HTTP_URL": http_url,
        "RETRIEVAL_TEST_GRPC_URL": f"http://{target}",
        "RETRIEVAL_TEST_API_KEY": new_key(),
        "RETRIEVAL_TEST_OTHER_API_KEY": new_key(),
    }
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", "test/"],
        cwd=TS_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    print(*[line for line in output.splitlines() if line.startswith("# ")], sep="\n")
    counts = dict(re.findall(r"^# (pass|fail|skipped|todo) (\d+)$", output, flags=re.M))
    # 4 protocols x 9 steps, none failed or skipped
    assert counts == {"pass": "36", "fail": "0", "skipped": "0", "todo": "0"}, output[-4000:]
