"""Atomic operations on int64 arrays for Numba kernels (compiled to LLVM atomics).

The step kernel runs its threads as a team that meets at barriers inside one parallel
region (see :func:`engine.kernels._steps`); these are the few primitives it needs. Each
takes a 1-D int64 array and an index. Orderings: loads acquire, stores release,
read-modify-writes are sequentially consistent. ``pause`` is the x86 spin-wait hint (a
no-op elsewhere) and ``sleep_us`` calls ``usleep`` on POSIX systems: a thread that waits
long lets its core go idle, so the scheduler can run there the thread it is waiting for,
when that one was pre-empted (by the dashboard's UI thread, say). Spinning with
``sched_yield`` instead would keep the core busy and the waited-for thread off it.
"""

from __future__ import annotations

import os
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = os.name == "posix"


def _slot(context, builder, sig, args):
    """Pointer to arr[i] (no wraparound, no bounds check)."""
    aryty, idxty = sig.args[0], sig.args[1]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = context.cast(builder, args[1], idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


def _int64_vector(arr, i) -> bool:
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int64
            and isinstance(i, types.Integer))


@intrinsic
def load_acquire(typingctx, arr, i):
    """arr[i], read atomically with acquire ordering."""
    if not _int64_vector(arr, i):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args), "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def store_release(typingctx, arr, i, value):
    """arr[i] = value, written atomically with release ordering."""
    if not _int64_vector(arr, i) or not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(v, _slot(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()

    return types.void(arr, i, value), codegen


@intrinsic
def fetch_add(typingctx, arr, i, value):
    """Atomically arr[i] += value; returns the old value."""
    if not _int64_vector(arr, i) or not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _slot(context, builder, sig, args), v, "seq_cst")

    return types.int64(arr, i, value), codegen


@intrinsic
def compare_exchange(typingctx, arr, i, expected, value):
    """Atomically: if arr[i] == expected, arr[i] = value. Returns True if it did."""
    if (not _int64_vector(arr, i) or not isinstance(expected, types.Integer)
            or not isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        e = context.cast(builder, args[2], sig.args[2], types.int64)
        v = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(_slot(context, builder, sig, args), e, v, "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)

    return types.boolean(arr, i, expected, value), codegen


def _emit_pause(builder) -> None:
    """The x86 ``pause`` instruction; nothing on other machines."""
    if _X86:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")
        builder.call(fn, [])


@intrinsic
def pause(typingctx):
    """Spin-wait hint to the core (x86 ``pause``); nothing on other machines."""

    def codegen(context, builder, sig, args):
        _emit_pause(builder)
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def sleep_us(typingctx, us):
    """Sleep about `us` microseconds (``usleep``; a spin hint off POSIX). The core goes idle,
    so the scheduler can move a runnable thread onto it."""
    if not isinstance(us, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        if _POSIX:
            fn = cgutils.get_or_insert_function(builder.module,
                                                ir.FunctionType(ir.IntType(32),
                                                                [ir.IntType(32)]),
                                                "usleep")
            builder.call(fn, [context.cast(builder, args[0], sig.args[0], types.uint32)])
        else:
            _emit_pause(builder)
        return context.get_dummy_value()

    return types.void(us), codegen
