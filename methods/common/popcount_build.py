"""Build the native CPU kernels into one library in build/native/ — ``make install`` runs this: the XNOR-popcount
convolution (csrc/binary_popcount.cpp) and Network Sketching's associative accumulation (csrc/sketch_associative.cpp);
loaded by methods/common/native.py.

    python -m methods.common.popcount_build            # g++ (or $CXX), about a second

One g++ call, no torch headers: ``-O3 -march=native -fopenmp -shared -fPIC``. ``-march=native`` makes
``__builtin_popcountll`` the hardware POPCNT instruction (without it GCC calls a slow library routine), so the
library is built on the machine that runs it; set ``CR_NATIVE_FLAGS`` to replace ``-march=native`` (e.g.
``-mpopcnt`` for a library shared across CPU models). On failure it prints one line naming the cause and exits 1.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "csrc" / "binary_popcount.cpp", ROOT / "csrc" / "sketch_associative.cpp"]
LIBRARY = ROOT / "build" / "native" / "libbinary_popcount.so"


def build(cxx: str | None = None) -> Path:
    """Compile SOURCES into LIBRARY (written to a temporary name, then renamed); returns LIBRARY."""
    cxx = cxx or os.environ.get("CXX", "g++")
    arch = shlex.split(os.environ.get("CR_NATIVE_FLAGS", "-march=native"))
    LIBRARY.parent.mkdir(parents=True, exist_ok=True)
    tmp = LIBRARY.with_suffix(f".so.tmp{os.getpid()}")
    cmd = [cxx, "-O3", *arch, "-fopenmp", "-shared", "-fPIC", "-std=c++17", *map(str, SOURCES), "-o", str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"native kernel build failed: compiler {cxx!r} not found "
                           "(install g++ or set CXX)") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else f"exit status {proc.returncode}")
        raise RuntimeError(f"native kernel build failed ({' '.join(cmd[:-2])}): {first}")
    os.replace(tmp, LIBRARY)
    return LIBRARY


def main() -> int:
    try:
        path = build()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"built {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
