"""Explicit float32 SIMD vectors for Numba kernels (an LLVM ``<16 x float>`` value).

Numba's loop vectorizer picks its own vector width, and on Xeons with AVX-512 LLVM prefers
256-bit vectors (``prefer-256-bit``), half of what the two 512-bit FMA units can take. The
row kernels instead say what they mean: a value of type ``f32v`` is a vector of LANES = 16
floats, and these intrinsics load, store, multiply-add and sum it. An explicit 512-bit
vector is still lowered to one zmm register under ``prefer-256-bit`` (that tuning flag only
steers the vectorizers), so only the kernels written with ``f32v`` change width; every
other loop compiles as before. Without AVX-512, LLVM splits each vector into two 256-bit
halves (or four 128-bit quarters): the same arithmetic lane by lane, so the same bits on
every x86 CPU; there are then half as many vector registers, and ``WIDE`` tells kernels
to keep fewer vectors live at once.

Every operation is exact IEEE single precision in a fixed order: ``vfma`` rounds once,
``vsum`` adds the halves of the vector (16 -> 8 -> 4 -> 2 -> 1), so a kernel written with
them gives the same bits on every run, whatever the thread count.

Loads and stores take a 1-D float32 array and the index of the first of LANES consecutive
elements; there is no bounds check (the caller keeps ``i + LANES <= len``).
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic, models, register_model


def _host_has_avx512() -> bool:
    """Whether the code is compiled for AVX-512F (32 vector registers of 16 floats).

    Numba compiles for the host's features unless NUMBA_CPU_FEATURES names others."""
    configured = getattr(numba_config, "CPU_FEATURES", None)
    if configured is not None:
        return "+avx512f" in configured.split(",")
    try:
        features = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - some hosts cannot report their features
        return False
    return bool(features.get("avx512f", False))


LANES = 16
"""Floats per vector, on every CPU (the kernels' partial sums, hence their bits, follow it)."""
WIDE = _host_has_avx512()
"""True where a vector is one register (AVX-512): kernels may keep ~25 vectors live."""
_VT = ir.VectorType(ir.FloatType(), LANES)
_I32 = ir.IntType(32)


class F32Vector(types.Type):
    """Numba type of one float32 SIMD vector of LANES lanes."""

    def __init__(self) -> None:
        super().__init__(name=f"f32x{LANES}")


f32v = F32Vector()


@register_model(F32Vector)
class _F32VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VT)


def _f32_1d(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.float32


def _pointer(context, builder, aryty, ary_value, idxty, idx_value):
    """Pointer to ary[idx] (no wraparound, no bounds check)."""
    ary = context.make_array(aryty)(context, builder, ary_value)
    idx = context.cast(builder, idx_value, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


@intrinsic
def vload(typingctx, arr, i):
    """The vector arr[i:i+LANES] (arr: 1-D float32, contiguous over those elements)."""
    if not _f32_1d(arr) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(p, _VT.as_pointer()), align=4)

    return f32v(arr, i), codegen


@intrinsic
def vstore(typingctx, arr, i, v):
    """arr[i:i+LANES] = v."""
    if not _f32_1d(arr) or not isinstance(i, types.Integer) or v != f32v:
        return None

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(args[2], builder.bitcast(p, _VT.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """The vector with every lane float32(x)."""
    if not isinstance(x, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float32)
        undef = ir.Constant(_VT, ir.Undefined)
        first = builder.insert_element(undef, v, ir.Constant(_I32, 0))
        return builder.shuffle_vector(first, undef,
                                      ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))

    return f32v(x), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c in each lane, rounded once (``llvm.fma``)."""
    if a != f32v or b != f32v or c != f32v:
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(_VT, [_VT, _VT, _VT]),
                                            f"llvm.fma.v{LANES}f32")
        return builder.call(fn, list(args))

    return f32v(a, b, c), codegen


@intrinsic
def vsum(typingctx, v):
    """Sum of the lanes in a fixed order: the two halves added lane by lane, repeatedly."""
    if v != f32v:
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        n = LANES
        while n > 1:
            h = n // 2
            it = ir.VectorType(_I32, h)
            lo = builder.shuffle_vector(x, x, ir.Constant(it, list(range(h))))
            hi = builder.shuffle_vector(x, x, ir.Constant(it, list(range(h, n))))
            x = builder.fadd(lo, hi)
            n = h
        return builder.extract_element(x, ir.Constant(_I32, 0))

    return types.float32(v), codegen


@intrinsic
def vprefetch(typingctx, arr, i):
    """Hint the line holding arr[i] into L2 (``prefetcht1``); no fault, no effect on results."""
    if not _f32_1d(arr) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32]),
            "llvm.prefetch")
        builder.call(fn, [builder.bitcast(p, i8p), ir.Constant(_I32, 0), ir.Constant(_I32, 2),
                          ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen
