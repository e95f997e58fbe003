"""Generate Python code from protos/ into src/ (the one place generated code comes from).

Usage: python scripts/gen_protos.py [--check]
  --check  generate into a temporary folder and fail if src/ differs (CI).
"""

from __future__ import annotations

import filecmp
import pathlib
import sys
import tempfile

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
SRC = ROOT / "src"
# (proto file, also generate grpc service stubs?)
FILES = [
    ("eagle/testing/v1/echo.proto", True),
    ("eagle/membership/v1/membership.proto", True),
    ("eagle/etcdwire/v1/etcd.proto", False),
    ("eagle/testing/v1/etcdkv.proto", False),
    # grpc's interop-test protos (package grpc.testing), copied from grpc/grpc
    ("eagle/testing/interop/empty.proto", False),
    ("eagle/testing/interop/messages.proto", False),
    ("eagle/testing/interop/test.proto", True),
]


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    written: list[pathlib.Path] = []
    for rel, grpc_stubs in FILES:
        args = ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--pyi_out={out}"]
        if grpc_stubs:
            args.append(f"--grpc_python_out={out}")
        args.append(str(PROTOS / rel))
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {rel}")
        stem = rel[: -len(".proto")]
        suffixes = ["_pb2.py", "_pb2.pyi"] + (["_pb2_grpc.py"] if grpc_stubs else [])
        written += [pathlib.Path(stem + s) for s in suffixes]
        # make every folder on the way a package
        pkg = pathlib.Path(rel).parent
        while str(pkg) not in (".", "eagle"):
            init = out / pkg / "__init__.py"
            if not init.exists():
                init.write_text("")
            written.append(pkg / "__init__.py")
            pkg = pkg.parent
    return written


def main() -> int:
    if "--check" in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            files = generate(pathlib.Path(tmp))
            stale = [
                str(f)
                for f in files
                if not (SRC / f).exists() or not filecmp.cmp(SRC / f, pathlib.Path(tmp) / f, False)
            ]
        if stale:
            print("generated protobuf code is out of date; run `make protos`:", *stale, sep="\n  ")
            return 1
        print(f"generated protobuf code is up to date ({len(files)} files)")
        return 0
    files = generate(SRC)
    print(f"wrote {len(files)} files under src/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
