"""Regenerate the checked-in gRPC stubs under service/_proto from protos/.

The proto root is mapped onto the virtual path ``service/_proto`` so that the
generated modules import each other as ``service._proto.agentopia...`` without
any post-processing. The TypeScript client's code (protobuf-es v2, for
@connectrpc/connect) goes to clients/typescript/src/gen, generated with the
``protoc-gen-es`` that ``npm ci`` put in clients/typescript/node_modules.
``--check`` regenerates both into a temporary folder and fails when the
checked-in files differ (CI drift check).
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
TS_CLIENT = ROOT / "clients" / "typescript"
TS_GENERATED = TS_CLIENT / "src" / "gen"
PROTOC_GEN_ES = TS_CLIENT / "node_modules" / ".bin" / "protoc-gen-es"


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


def generate_ts(out_dir: Path) -> None:
    if not PROTOC_GEN_ES.exists():
        raise SystemExit(f"{PROTOC_GEN_ES.relative_to(ROOT)} is missing: run `make install`")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-es={PROTOC_GEN_ES}",
        f"--es_out={out_dir}",
        # .ts imports: Deno runs the sources as they are; tsc rewrites them to .js
        "--es_opt=target=ts,import_extension=ts",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc (protoc-gen-es) failed")


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            generate_ts(Path(tmp) / "ts")
            bad = _differences(filecmp.dircmp(Path(tmp) / VIRTUAL, GENERATED))
            bad += _differences(filecmp.dircmp(Path(tmp) / "ts", TS_GENERATED))
            if bad:
                print("generated stubs are stale; run `make proto`:", *bad, sep="\n  ")
                return 1
        print("generated stubs (Python and TypeScript) are up to date")
        return 0
    shutil.rmtree(GENERATED, ignore_errors=True)
    generate(ROOT)
    shutil.rmtree(TS_GENERATED, ignore_errors=True)
    generate_ts(TS_GENERATED)
    print(f"generated stubs in {GENERATED.relative_to(ROOT)} and {TS_GENERATED.relative_to(ROOT)}")
    return 0


def _differences(diff: filecmp.dircmp[str]) -> list[str]:
    bad = [*diff.left_only, *diff.right_only, *diff.diff_files]
    bad = [b for b in bad if b != "__pycache__"]
    for sub in diff.subdirs.values():
        bad.extend(_differences(sub))
    return bad


if __name__ == "__main__":
    raise SystemExit(main())
