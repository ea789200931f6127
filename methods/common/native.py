"""The compiled CPU kernels (csrc/*.cpp, one library built by ``python -m methods.common.popcount_build``, which
``make install`` runs): loading, the ABI check and every C signature, in one place. Users:
methods/common/packed_binary.py (``bp_*``, XNOR-popcount convolution) and methods/sketch.py (``sk_accumulate``)."""
from __future__ import annotations

import ctypes

from methods.common.popcount_build import LIBRARY

ABI = 2       # bp_abi_version() of the library these signatures describe
MISSING = (f"native kernels not built ({LIBRARY} missing): run `make install` or "
           "`python -m methods.common.popcount_build`")
_LIB: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The library, loaded once, with its argument types set; fails naming the command that builds it."""
    global _LIB
    if _LIB is None:
        if not LIBRARY.exists():
            raise RuntimeError(MISSING)
        lib = ctypes.CDLL(str(LIBRARY))
        if lib.bp_abi_version() != ABI:
            raise RuntimeError(f"{LIBRARY} is stale (ABI {lib.bp_abi_version()}, need {ABI}): "
                               "run `python -m methods.common.popcount_build`")
        i64, ptr, nthreads = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        lib.bp_pack_nchw.argtypes = [ptr, i64, i64, i64, ptr, nthreads]
        lib.bp_conv2d.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, ptr, nthreads]
        lib.sk_accumulate.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, nthreads]
        _LIB = lib
    return _LIB


def available() -> bool:
    """True when the compiled library loads."""
    try:
        load()
    except RuntimeError:
        return False
    return True
