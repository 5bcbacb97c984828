"""Regenerate the checked-in gRPC stubs under service/_proto from protos/.

The proto root is mapped onto the virtual path ``service/_proto`` so that the
generated modules import each other as ``service._proto.agentopia...`` without
any post-processing. ``--check`` regenerates into a temporary folder and fails
when the checked-in files differ (CI drift check).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ROOT / "service" / "_proto"
VIRTUAL = "service/_proto"


def generate(out_root: Path) -> None:
    # protoc finds the mypy-protobuf plugins next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{VIRTUAL}={PROTOS}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[f"{VIRTUAL}/{f}" for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    gen = out_root / VIRTUAL
    for folder in [gen, *[p for p in gen.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            fresh = Path(tmp) / VIRTUAL
            diff = filecmp.dircmp(fresh, GENERATED)
            bad = _differences(diff)
            if bad:
                print("generated stubs are stale; run `make proto`:", *bad, sep="\n  ")
                return 1
        print("generated stubs are up to date")
        return 0
    shutil.rmtree(GENERATED, ignore_errors=True)
    generate(ROOT)
    print(f"generated stubs in {GENERATED.relative_to(ROOT)}")
    return 0


def _differences(diff: filecmp.dircmp[str]) -> list[str]:
    bad = [*diff.left_only, *diff.right_only, *diff.diff_files]
    bad = [b for b in bad if b != "__pycache__"]
    for sub in diff.subdirs.values():
        bad.extend(_differences(sub))
    return bad


if __name__ == "__main__":
    raise SystemExit(main())
