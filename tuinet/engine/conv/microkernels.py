"""Register-tile micro-kernels of the convolution GEMMs, written as LLVM IR with explicit vector types.

``tile_kernel(R, W, L)`` returns a Numba intrinsic ``mk(xf, u, r0, v, b, j0, c, cr0, cj0, bias, accumulate)``
computing one R x W tile of an implicit GEMM::

    T[r, :] = sum over t of xf[u[r0 + r] + v[t]] * b[t, j0:j0 + W]      (r < R)
    c[cr0 + r, cj0:cj0 + W] += T[r, :]   (accumulate)   or   = T[r, :] + bias[j0:j0 + W]

(``cr0, cj0`` are ``r0, j0`` when the tile is written in place, ``0, 0`` when it goes to a small buffer.)

``tile_kernel(R, W, L, scatter=True)`` returns ``mk(xf, u, r0, v, b, j0, c, cu, cj0)`` with the same tile added
into rows of a flat ``c`` found through an offset table: ``c[cu[r0 + r] + cj0 : ... + W] += T[r, :]``. The
input gradient uses it to add each output position's gradient columns straight into the input pixels under
its window (a col2im fused into the GEMM's epilogue).

The tile lives in R x ceil(W / L) vector registers of L floats (L = 16 for 512-bit vectors, 8 for 256-bit; a
row of 24 with L = 16 is one 16-wide and one 8-wide vector) for the whole reduction: each step loads the W
values of b[t] once, broadcasts R values of A and issues one ``llvm.fmuladd`` per vector (a fused multiply-add
on FMA hardware), with no load or store of the tile. Where the accumulators, B's vectors and a broadcast would
not fit in the registers (16 with AVX2), the tile's columns are reduced in groups, one pass over the taps each
(:func:`column_groups`: a 6 x 32 tile as two 6 x 16 passes). The kernel is inlined into its caller (an intrinsic emits
IR at the call site), so LLVM has a short loop to optimize and nothing to search: the scalar micro-kernels this
replaces held the tile in R x W scalar locals for LLVM's SLP vectorizer to pack, which made them slow to compile
(the four of them about 26 of the 45 s a first conv run compiled) and left the vector width to LLVM.

The rows of ``b`` and ``c`` must be contiguous (unit stride along the columns) and ``xf`` a contiguous 1-D view;
every caller in :mod:`tuinet.engine.conv.kernels` passes such arrays. Offsets in ``u`` and ``v`` are element
offsets into ``xf`` (any integer type).
"""

from __future__ import annotations

from functools import lru_cache

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic



def row_vectors(width: int, lanes: int) -> list[int]:
    """The vector lengths covering one tile row of ``width`` floats with at most ``lanes`` per vector."""
    out, left = [], width
    while left:
        n = lanes
        while n > left:
            n //= 2
        out.append(n)
        left -= n
    return out


def vector_registers(lanes: int) -> int:
    """The vector registers x86 has for ``lanes``-float vectors: 32 zmm with AVX-512, 16 ymm with AVX2."""
    return 32 if lanes == 16 else 16


def column_groups(rows: int, nvec: int, regs: int) -> list[tuple[int, int]]:
    """The row's ``nvec`` vectors in groups (start, end) small enough that a pass over the taps holds its
    ``rows`` x group accumulators, the group's vectors of B and one broadcast in ``regs`` registers.

    One group (the whole tile in one pass) whenever it fits: always with 32 registers. With 16 (AVX2), a 6 x 32
    tile (24 accumulators) runs as two 6 x 16 passes (12 + 2 + 1 registers), where a 3 x 32 one in one pass
    needed 12 + 4 + 1: LLVM kept one accumulator on the stack, a store and a load in every step of the loop."""
    g = nvec
    while g > 1 and rows * g + g + 1 > regs:
        g -= 1
    g = -(-nvec // -(-nvec // g))  # the same number of passes, with groups as even as they can be
    return [(k, min(nvec, k + g)) for k in range(0, nvec, g)]


class _Loop:
    """A counted loop in LLVM IR carrying values: ``for i in range(start, end, step)``, the carried values starting
    at ``inits``. Opening it emits the header (the index and carried phis, the exit test) and leaves the builder
    at the start of the body; :meth:`close` takes the body's new values, branches back and leaves the builder
    in the exit block, where :attr:`carried` hold the final values."""

    def __init__(self, builder, name: str, start, end, inits):
        i64 = ir.IntType(64)
        entry = builder.block
        self.header = builder.append_basic_block(f"{name}.header")
        body = builder.append_basic_block(f"{name}.body")
        self.exit = builder.append_basic_block(f"{name}.exit")
        builder.branch(self.header)
        builder.position_at_end(self.header)
        self.index = builder.phi(i64, f"{name}.i")
        self.index.add_incoming(start, entry)
        self.carried = []
        for k, init in enumerate(inits):
            phi = builder.phi(init.type, f"{name}.v{k}")
            phi.add_incoming(init, entry)
            self.carried.append(phi)
        builder.cbranch(builder.icmp_signed("<", self.index, end), body, self.exit)
        builder.position_at_end(body)

    def close(self, builder, step: int, new) -> None:
        """End the body: the next index, the carried values ``new``, back to the header; then on to the exit."""
        body_end = builder.block
        self.index.add_incoming(builder.add(self.index, ir.Constant(ir.IntType(64), step)), body_end)
        for phi, val in zip(self.carried, new):
            phi.add_incoming(val, body_end)
        builder.branch(self.header)
        builder.position_at_end(self.exit)


#: rows of A per base register in the ``strided`` micro-kernels (see :func:`tile_kernel`)
STRIDED_GROUP = 6


@lru_cache(maxsize=None)
def tile_kernel(rows: int, width: int, lanes: int, scatter: bool = False, btable: bool = False, affine: int = 0,
                strided: bool = False):
    """The intrinsic computing a ``rows`` x ``width`` tile with ``lanes``-wide vectors (see the module doc);
    ``scatter``: the variant adding the tile into the rows ``c[cu[r0 + r] + cj0:]`` of a flat ``c``; ``btable``:
    the variant reading the rows of B from a flat ``b`` through an offset table ``bu``; ``affine`` (> 0): the
    tile's rows of A start at ``xf + u[r0] + r * affine`` (one offset read, the rows a constant stride apart: every
    row's address is one base register plus a constant, where R row pointers from the table do not all fit in x86's
    integer registers and are reloaded from the stack in the loop); ``strided``: the rows of A a stride apart that
    is known only at run time, ``u[r0 + 1] - u[r0]`` (so the tile's second row must be a real row; a Dense layer's
    product, whose row length is the layer's width): each group of ``STRIDED_GROUP`` rows has one base pointer and
    the rows in it are the base plus 0 .. 5 strides, offsets the groups share (a 12-row tile: 2 bases and 5
    offsets; 12 pointers of their own spilled, 114 against 171 GFLOP/s on one core of an AVX-512 Xeon)."""
    if scatter and btable:
        raise ValueError("a micro-kernel is either scatter or btable")
    if strided and affine:
        raise ValueError("a micro-kernel's rows are either affine or strided")
    vecs = row_vectors(width, lanes)
    offs = [sum(vecs[:k]) for k in range(len(vecs))]
    groups = column_groups(rows, len(vecs), vector_registers(lanes))

    def check(xf, u, v, b, c, bias):
        for a, nd in ((xf, 1), (b, 1 if btable else 2), (c, 1 if scatter else 2)) + (
                () if scatter else ((bias, 1),)):
            if not (isinstance(a, types.Array) and a.ndim == nd and a.dtype == types.float32):
                raise TypeError(f"micro-kernel: expected a {nd}-d float32 array, got {a}")
        for a in (u, v):
            if not (isinstance(a, types.Array) and a.ndim == 1 and isinstance(a.dtype, types.Integer)):
                raise TypeError(f"micro-kernel: expected a 1-d integer array, got {a}")

    names = ("xf", "u", "r0", "v", "b") + (("bu",) if btable else ()) + ("j0", "c", "cr0", "cj0") + (
        () if scatter else ("bias", "acc"))  # cr0 is the table cu in the scatter variant

    def codegen(context, builder, signature, args):
        av = dict(zip(names, args))
        aty = dict(zip(names, signature.args))
        i64 = ir.IntType(64)
        f32 = ir.FloatType()

        def arr(name):
            return context.make_array(aty[name])(context, builder, av[name])

        def int64(name):
            return context.cast(builder, av[name], aty[name], types.int64)

        xa, ua, va, ba, ca = arr("xf"), arr("u"), arr("v"), arr("b"), arr("c")
        r0, j0, cj0 = int64("r0"), int64("j0"), int64("cj0")
        if not scatter:
            biasa = arr("bias")
            cr0 = int64("cr0")
            flag = context.cast(builder, av["acc"], aty["acc"], types.boolean)
        vtys = [ir.VectorType(f32, n) for n in vecs]
        fmas = [cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                               f"llvm.fmuladd.v{vt.count}f32") for vt in vtys]
        if btable:
            bua = arr("bu")
            buty = context.get_value_type(aty["bu"].dtype)
        else:
            b_stride = builder.ashr(cgutils.unpack_tuple(builder, ba.strides, 2)[0], ir.Constant(i64, 2))
        ntaps = cgutils.unpack_tuple(builder, va.shape, 1)[0]
        uty = context.get_value_type(aty["u"].dtype)
        vty = context.get_value_type(aty["v"].dtype)

        def as_i64(val, ty):
            return builder.sext(val, i64) if ty.width < 64 else val

        # the R rows of A start at xf + u[r0 + r]
        if strided:  # xf + u[r0] + r * stride, stride = u[r0 + 1] - u[r0]: a base per group, offsets shared
            ur0 = as_i64(builder.load(builder.gep(ua.data, [r0])), uty)
            ur1 = as_i64(builder.load(builder.gep(ua.data, [builder.add(r0, ir.Constant(i64, 1))])), uty)
            stride = builder.sub(ur1, ur0)
            bases = [builder.gep(xa.data, [builder.add(ur0, builder.mul(stride, ir.Constant(i64, g)))])
                     for g in range(0, rows, STRIDED_GROUP)]
            row_offs = [builder.mul(stride, ir.Constant(i64, k)) for k in range(STRIDED_GROUP)]
        elif affine:  # xf + u[r0] + r * affine
            ur0 = as_i64(builder.load(builder.gep(ua.data, [r0])), uty)
            xrows = [builder.gep(xa.data, [builder.add(ur0, ir.Constant(i64, r * affine))]) for r in range(rows)]
        else:
            urs = [builder.load(builder.gep(ua.data, [builder.add(r0, ir.Constant(i64, r))])) for r in range(rows)]
            xrows = [builder.gep(xa.data, [as_i64(ur, uty)]) for ur in urs]
        bcol = builder.gep(ba.data, [j0])  # b[0, j0] (b[j0] with btable)
        zero = [ir.Constant(vt, None) for vt in vtys]
        undef = [ir.Constant(vt, ir.Undefined) for vt in vtys]
        masks = [ir.Constant(ir.VectorType(ir.IntType(32), n), None) for n in vecs]

        if scatter:
            cua = arr("cr0")
            cuty = context.get_value_type(aty["cr0"].dtype)
        else:
            c_stride = builder.ashr(cgutils.unpack_tuple(builder, ca.strides, 2)[0], ir.Constant(i64, 2))

        def vec_ptr(crow, k):  # the k-th vector of the tile row starting at crow
            return builder.bitcast(builder.gep(crow, [ir.Constant(i64, offs[k])]), vtys[k].as_pointer())

        def add_row(crow, row_accs, gvecs):  # c's row += the tile row's accumulators of this group
            for k, acc in zip(gvecs, row_accs):
                ptr = vec_ptr(crow, k)
                builder.store(builder.fadd(builder.load(ptr, align=4), acc), ptr, align=4)

        for g0, g1 in groups:  # each group of the row's vectors: its own pass over the taps, then its epilogue
            gvecs = list(range(g0, g1))
            loop = _Loop(builder, "mk", ir.Constant(i64, 0), ntaps, [zero[k] for _ in range(rows) for k in gvecs])
            t, accs = loop.index, loop.carried
            vt_off = as_i64(builder.load(builder.gep(va.data, [t])), vty)
            if btable:  # b[bu[t] + j0:]
                brow = builder.gep(bcol, [as_i64(builder.load(builder.gep(bua.data, [t])), buty)])
            else:
                brow = builder.gep(bcol, [builder.mul(t, b_stride)])
            bv = [builder.load(vec_ptr(brow, k), align=4) for k in gvecs]
            new = []
            for r in range(rows):
                if strided:
                    a = builder.load(builder.gep(builder.gep(bases[r // STRIDED_GROUP], [vt_off]),
                                                 [row_offs[r % STRIDED_GROUP]]))
                else:
                    a = builder.load(builder.gep(xrows[r], [vt_off]))
                for q, k in enumerate(gvecs):
                    splat = builder.shuffle_vector(builder.insert_element(undef[k], a, ir.Constant(i64, 0)),
                                                   undef[k], masks[k])
                    new.append(builder.call(fmas[k], [splat, bv[q], accs[r * len(gvecs) + q]]))
            loop.close(builder, 1, new)
            n = len(gvecs)
            if scatter:  # c[cu[r0 + r] + cj0 + o] += T[r, o]
                for r in range(rows):
                    cur = builder.load(builder.gep(cua.data, [builder.add(r0, ir.Constant(i64, r))]))
                    add_row(builder.gep(ca.data, [builder.add(as_i64(cur, cuty), cj0)]), accs[r * n:r * n + n], gvecs)
                continue
            crow0 = builder.gep(ca.data, [builder.add(builder.mul(cr0, c_stride), cj0)])
            crows = [builder.gep(crow0, [builder.mul(ir.Constant(i64, r), c_stride)]) for r in range(rows)]
            with builder.if_else(flag) as (then, otherwise):
                with then:
                    for r in range(rows):
                        add_row(crows[r], accs[r * n:r * n + n], gvecs)
                with otherwise:
                    bias_row = builder.gep(biasa.data, [j0])
                    bb = [builder.load(vec_ptr(bias_row, k), align=4) for k in gvecs]
                    for r in range(rows):
                        for q, k in enumerate(gvecs):
                            builder.store(builder.fadd(accs[r * n + q], bb[q]), vec_ptr(crows[r], k), align=4)
        return context.get_dummy_value()

    def typer(args):
        ty = dict(zip(names, args))
        check(ty["xf"], ty["u"], ty["v"], ty["b"], ty["c"], ty.get("bias"))
        for name in ("cr0",) if scatter else ():
            if not (isinstance(ty[name], types.Array) and ty[name].ndim == 1
                    and isinstance(ty[name].dtype, types.Integer)):
                raise TypeError(f"micro-kernel: expected a 1-d integer array, got {ty[name]}")
        return types.void(*args), codegen

    if btable:
        @intrinsic
        def mk(typingctx, xf, u, r0, v, b, bu, j0, c, cr0, cj0, bias, accumulate):
            return typer((xf, u, r0, v, b, bu, j0, c, cr0, cj0, bias, accumulate))
    elif scatter:
        @intrinsic
        def mk(typingctx, xf, u, r0, v, b, j0, c, cu, cj0):
            return typer((xf, u, r0, v, b, j0, c, cu, cj0))
    else:
        @intrinsic
        def mk(typingctx, xf, u, r0, v, b, j0, c, cr0, cj0, bias, accumulate):
            return typer((xf, u, r0, v, b, j0, c, cr0, cj0, bias, accumulate))

    mk.__name__ = (f"_mk{rows}x{width}{'s' if scatter else ''}{'t' if btable else ''}{'a' if affine else ''}"
                   f"{'r' if strided else ''}")
    return mk


#: rows of a column sum in flight at once (:func:`_colsum8`): independent vector accumulators, so a row's add does
#: not wait for the previous row's
COLSUM_STREAMS = 4


@intrinsic
def _colsum8(typingctx, g, j0, out):
    """out[j0:j0 + 8] += the column sums of g[:, j0:j0 + 8] (g: 2-D float32 with contiguous rows, out: 1-D float32).

    Emitted as LLVM IR with 8-float vectors: ``COLSUM_STREAMS`` accumulators, row q into accumulator q mod 4, added
    together at the end. The loop Numba compiled from eight scalar accumulators (SLP-vectorized) ran about 4
    cycles a row, one chain of adds; this one is bound by its loads (576 rows of 24 columns, a ``cnn`` first
    convolution's bias gradient for one sample: 0.15 against 2.0 us on an AVX-512 Xeon).
    """
    for a, nd in ((g, 2), (out, 1)):
        if not (isinstance(a, types.Array) and a.ndim == nd and a.dtype == types.float32):
            raise TypeError(f"_colsum8: expected a {nd}-d float32 array, got {a}")
    if not isinstance(j0, types.Integer):
        raise TypeError(f"_colsum8: expected an integer column, got {j0}")

    def codegen(context, builder, signature, args):
        gty, jty, oty = signature.args
        ga = context.make_array(gty)(context, builder, args[0])
        oa = context.make_array(oty)(context, builder, args[2])
        i64 = ir.IntType(64)
        vt = ir.VectorType(ir.FloatType(), 8)
        j = context.cast(builder, args[1], jty, types.int64)
        rows, _ = cgutils.unpack_tuple(builder, ga.shape, 2)
        stride = builder.ashr(cgutils.unpack_tuple(builder, ga.strides, 2)[0], ir.Constant(i64, 2))
        col = builder.gep(ga.data, [j])
        S = COLSUM_STREAMS
        whole = builder.sub(rows, builder.srem(rows, ir.Constant(i64, S)))
        zero = ir.Constant(vt, None)

        def row(q):
            ptr = builder.gep(col, [builder.mul(q, stride)])
            return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=4)

        # the whole groups of S rows, one accumulator each
        whole_rows = _Loop(builder, "cs", ir.Constant(i64, 0), whole, [zero] * S)
        q, accs = whole_rows.index, whole_rows.carried
        whole_rows.close(builder, S, [builder.fadd(accs[k], row(builder.add(q, ir.Constant(i64, k))))
                                      for k in range(S)])
        # the last rows % S rows into the first accumulator
        rest = _Loop(builder, "cs.rest", q, rows, [accs[0]])
        rest.close(builder, 1, [builder.fadd(rest.carried[0], row(rest.index))])
        last = rest.carried[0]
        parts = [last] + accs[1:]
        while len(parts) > 1:  # (a + b) + (c + d)
            parts = [builder.fadd(parts[k], parts[k + 1]) if k + 1 < len(parts) else parts[k]
                     for k in range(0, len(parts), 2)]
        total = parts[0]
        optr = builder.bitcast(builder.gep(oa.data, [j]), vt.as_pointer())
        builder.store(builder.fadd(builder.load(optr, align=4), total), optr, align=4)
        return context.get_dummy_value()

    return types.void(g, j0, out), codegen


# --- 2x2 pooling windows, eight channels at a time ---------------------------------------------------------------
#
# A pooling loop over the channels of one pixel (24 or 32 of them in the convolutional presets) is too short for
# LLVM's loop vectorizer, which wants 32 or 64 iterations at once with 512-bit vectors and runs a 24-channel
# loop as scalar code; these emit the eight-channel vectors themselves.

#: the vector types of these kernels: eight floats, eight int32 (window indices), and the lanes' numbers
V8F = ir.VectorType(ir.FloatType(), 8)
V8I = ir.VectorType(ir.IntType(32), 8)
IOTA8 = ir.Constant(V8I, list(range(8)))


def _vec_ptr(context, builder, aty, arr, off, offty, vt=V8F):
    """A pointer to a vector ``vt`` at element ``off`` of the 1-D array ``arr``."""
    data = context.make_array(aty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [context.cast(builder, off, offty, types.int64)]), vt.as_pointer())


def _splat(builder, value, vt):
    """``value`` in every lane of ``vt``."""
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32),
                                                                                                  vt.count), None))


def _check_pool(arrays, ints, who, floats=()):
    """The argument types of these kernels: 1-d arrays of the given dtypes, integers (or booleans), floats."""
    for a, dtype in arrays:
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == dtype):
            raise TypeError(f"{who}: expected a 1-d {dtype} array, got {a}")
    for i in ints:
        if not isinstance(i, (types.Integer, types.Boolean)):
            raise TypeError(f"{who}: expected an integer, got {i}")
    for f in floats:
        if not isinstance(f, types.Float):
            raise TypeError(f"{who}: expected a float, got {f}")


def _lane_mask(builder, context, n, nty):
    """The <8 x i1> mask of the first ``n`` lanes (n <= 8)."""
    count = builder.trunc(context.cast(builder, n, nty, types.int64), ir.IntType(32))
    return builder.icmp_unsigned("<", IOTA8, _splat(builder, count, V8I))


def _masked_load8(builder, ptr, mask, vt=V8F):
    """The eight floats (or int32) of ``ptr`` (a ``vt``*) under ``mask``, 0 in the other lanes (which are not
    read)."""
    name = "v8f32" if vt == V8F else "v8i32"
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vt, [vt.as_pointer(), ir.IntType(32), mask.type, vt]),
        f"llvm.masked.load.{name}.p0")
    return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 4), mask, ir.Constant(vt, None)])


def _masked_store8(builder, value, ptr, mask):
    """``value``'s lanes (eight floats or int32) under ``mask`` into ``ptr``; the other lanes are not written."""
    vt = value.type
    name = "v8f32" if vt == V8F else "v8i32"
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), ir.IntType(32), mask.type]),
        f"llvm.masked.store.{name}.p0")
    builder.call(fn, [value, ptr, ir.Constant(ir.IntType(32), 4), mask])


def _window2x2(context, builder, args, tys):
    """The flat offsets (int64) of a 2x2 window's four elements from the kernels' (i, c, wc) arguments: i, i + c,
    i + wc, i + wc + c (row-major window order)."""
    i0, cc, ww = (context.cast(builder, a, t, types.int64) for a, t in zip(args, tys))
    return [i0, builder.add(i0, cc), builder.add(i0, ww), builder.add(builder.add(i0, ww), cc)]


@intrinsic
def _max2x2_8(typingctx, x, i, c, wc, out, arg, o, n):
    """n <= 8 channels of one 2x2 window: out[o:o + n] = the max of x at i, i + c, i + wc, i + wc + c (+ 0..n-1), in
    that order, a candidate winning only when greater than the max so far (ties and a NaN after the first keep the
    earlier one); arg[o:o + n] (int32) = the winner's offset in x (its position + the lane). Masked, so any channel
    count runs as vectors."""
    _check_pool(((x, types.float32), (out, types.float32), (arg, types.int32)), (i, c, wc, o, n), "_max2x2_8")

    def codegen(context, builder, signature, args):
        xt, it, ct, wt, ot, at, oo, nt = signature.args
        mask = _lane_mask(builder, context, args[7], nt)
        best = idx = None
        for off in _window2x2(context, builder, args[1:4], (it, ct, wt)):
            v = _masked_load8(builder, _vec_ptr(context, builder, xt, args[0], off, types.int64), mask)
            here = builder.add(_splat(builder, builder.trunc(off, ir.IntType(32)), V8I), IOTA8)
            if best is None:
                best, idx = v, here
            else:
                better = builder.fcmp_ordered(">", v, best)
                best = builder.select(better, v, best)
                idx = builder.select(better, here, idx)
        _masked_store8(builder, best, _vec_ptr(context, builder, ot, args[4], args[6], oo), mask)
        _masked_store8(builder, idx, _vec_ptr(context, builder, at, args[5], args[6], oo, V8I), mask)
        return context.get_dummy_value()

    return types.void(x, i, c, wc, out, arg, o, n), codegen


@intrinsic
def _unpool2x2_8(typingctx, dy, y, relu, arg, q, i, c, wc, dx, n):
    """The backward pass of :func:`_max2x2_8` for n <= 8 channels of one window: g = dy[q:q + n], 0 where
    y[q:q + n] <= 0 when ``relu`` (a ReLU's mask), written to dx at i, i + c, i + wc, i + wc + c (+ 0..n-1) where
    arg[q:q + n] names that element, 0 elsewhere."""
    _check_pool(((dy, types.float32), (y, types.float32), (arg, types.int32), (dx, types.float32)),
                (relu, q, i, c, wc, n), "_unpool2x2_8")

    def codegen(context, builder, signature, args):
        dyt, yt, rt, at, qt, it, ct, wt, dxt, nt = signature.args
        mask = _lane_mask(builder, context, args[9], nt)
        g = _masked_load8(builder, _vec_ptr(context, builder, dyt, args[0], args[4], qt), mask)
        yv = _masked_load8(builder, _vec_ptr(context, builder, yt, args[1], args[4], qt), mask)
        relu_on = context.cast(builder, args[2], rt, types.boolean)
        keep = builder.or_(builder.fcmp_ordered(">", yv, ir.Constant(V8F, None)),
                           _splat(builder, builder.not_(relu_on), ir.VectorType(ir.IntType(1), 8)))
        zero = ir.Constant(V8F, None)
        g = builder.select(keep, g, zero)
        a = _masked_load8(builder, _vec_ptr(context, builder, at, args[3], args[4], qt, V8I), mask, V8I)
        for off in _window2x2(context, builder, args[5:8], (it, ct, wt)):
            here = builder.add(_splat(builder, builder.trunc(off, ir.IntType(32)), V8I), IOTA8)
            out = builder.select(builder.icmp_signed("==", a, here), g, zero)
            _masked_store8(builder, out, _vec_ptr(context, builder, dxt, args[8], off, types.int64), mask)
        return context.get_dummy_value()

    return types.void(dy, y, relu, arg, q, i, c, wc, dx, n), codegen


@intrinsic
def _copy_lanes8(typingctx, src, s, dst, d, n):
    """dst[d:d + n] = src[s:s + n] for n <= 8, one masked vector load and store (nothing outside the n floats is
    read or written): a copy of rows a few floats wide (a convolution's 6 output channels between its 8-wide GEMM
    rows and the layer's output) that Numba's loop made one float at a time."""
    _check_pool(((src, types.float32), (dst, types.float32)), (s, d, n), "_copy_lanes8")

    def codegen(context, builder, signature, args):
        st, stt, dt, dtt, nt = signature.args
        mask = _lane_mask(builder, context, args[4], nt)
        v = _masked_load8(builder, _vec_ptr(context, builder, st, args[0], args[1], stt), mask)
        _masked_store8(builder, v, _vec_ptr(context, builder, dt, args[2], args[3], dtt), mask)
        return context.get_dummy_value()

    return types.void(src, s, dst, d, n), codegen


@intrinsic
def _add_lanes8(typingctx, src, s, dst, d, n):
    """dst[d:d + n] += src[s:s + n] for n <= 8, masked (nothing outside the n floats read or written): the col2im
    scatter's kernel rows (KW * C floats, 30 for LeNet's second convolution) that Numba's loop added one float at a
    time."""
    _check_pool(((src, types.float32), (dst, types.float32)), (s, d, n), "_add_lanes8")

    def codegen(context, builder, signature, args):
        st, stt, dt, dtt, nt = signature.args
        mask = _lane_mask(builder, context, args[4], nt)
        dp = _vec_ptr(context, builder, dt, args[2], args[3], dtt)
        v = _masked_load8(builder, _vec_ptr(context, builder, st, args[0], args[1], stt), mask)
        _masked_store8(builder, builder.fadd(_masked_load8(builder, dp, mask), v), dp, mask)
        return context.get_dummy_value()

    return types.void(src, s, dst, d, n), codegen


@intrinsic
def _avg2x2_8(typingctx, x, i, c, wc, scale, out, o, n):
    """n <= 8 channels of one 2x2 average: out[o:o + n] = (((x[i] + x[i + c]) + x[i + wc]) + x[i + wc + c]) * scale
    (+ 0..n-1 each), the additions in that order (as the average pooling's loops make them); masked, so a
    channel count that is not a multiple of 8 (LeNet's 6) runs as vectors too."""
    _check_pool(((x, types.float32), (out, types.float32)), (i, c, wc, o, n), "_avg2x2_8", (scale,))

    def codegen(context, builder, signature, args):
        xt, it, ct, wt, st, ot, oo, nt = signature.args
        mask = _lane_mask(builder, context, args[7], nt)
        # each sum as fma(total, 1, v), one rounding like an add's: Numba's fast-math pass gives every fadd in the
        # function "reassoc", and LLVM then adds the four as (a + b) + (c + d), another rounding than the loops'
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8F, [V8F] * 3), "llvm.fma.v8f32")
        one = ir.Constant(V8F, [1.0] * 8)
        total = None
        for off in _window2x2(context, builder, args[1:4], (it, ct, wt)):
            v = _masked_load8(builder, _vec_ptr(context, builder, xt, args[0], off, types.int64), mask)
            total = v if total is None else builder.call(fma, [total, one, v])
        k = _splat(builder, context.cast(builder, args[4], st, types.float32), V8F)
        _masked_store8(builder, builder.fmul(total, k), _vec_ptr(context, builder, ot, args[5], args[6], oo), mask)
        return context.get_dummy_value()

    return types.void(x, i, c, wc, scale, out, o, n), codegen


@intrinsic
def _unavg2x2_8(typingctx, dy, q, scale, dx, i, c, wc, n):
    """The backward pass of :func:`_avg2x2_8` for stride 2 (windows that never overlap): dy[q:q + n] * scale written
    to dx at i, i + c, i + wc and i + wc + c (+ 0..n-1 each), masked to n <= 8 channels."""
    _check_pool(((dy, types.float32), (dx, types.float32)), (q, i, c, wc, n), "_unavg2x2_8", (scale,))

    def codegen(context, builder, signature, args):
        dyt, qt, st, dxt, it, ct, wt, nt = signature.args
        mask = _lane_mask(builder, context, args[7], nt)
        g = _masked_load8(builder, _vec_ptr(context, builder, dyt, args[0], args[1], qt), mask)
        g = builder.fmul(g, _splat(builder, context.cast(builder, args[2], st, types.float32), V8F))
        for off in _window2x2(context, builder, args[4:7], (it, ct, wt)):
            _masked_store8(builder, g, _vec_ptr(context, builder, dxt, args[3], off, types.int64), mask)
        return context.get_dummy_value()

    return types.void(dy, q, scale, dx, i, c, wc, n), codegen


@intrinsic
def _relu_mask8(typingctx, src, s, ym, m, dst, d):
    """dst[d:d + 8] = src[s:s + 8] where ym[m:m + 8] > 0, else 0 (a ReLU's backward pass: NaN in ym gives 0, as
    :func:`tuinet.engine.kernels.relu_grad_bias`), one vector each: the loop over a panel row, written with offsets
    Numba cannot prove non-negative, stayed scalar, with a check of each index."""
    _check_pool(((src, types.float32), (ym, types.float32), (dst, types.float32)), (s, m, d), "_relu_mask8")

    def codegen(context, builder, signature, args):
        st, stt, yt, ytt, dt, dtt = signature.args
        v = builder.load(_vec_ptr(context, builder, st, args[0], args[1], stt), align=4)
        keep = builder.fcmp_ordered(">", builder.load(_vec_ptr(context, builder, yt, args[2], args[3], ytt), align=4),
                                    ir.Constant(V8F, None))
        builder.store(builder.select(keep, v, ir.Constant(V8F, None)),
                      _vec_ptr(context, builder, dt, args[4], args[5], dtt), align=4)
        return context.get_dummy_value()

    return types.void(src, s, ym, m, dst, d), codegen


#: the 8x8 transpose's three shuffle stages (pairs of rows interleaved, then pairs of pairs, then 128-bit halves)
_T8_STAGES = (((0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)),
              ((0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)),
              ((0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)))


@intrinsic
def _transpose8(typingctx, src, s, ss, dst, d, ds):
    """dst[d + j * ds + i] = src[s + i * ss + j] for i, j < 8: an 8 x 8 block of floats transposed in registers
    (eight vector loads, 24 shuffles, eight vector stores), where a loop over the block ran element by element."""
    _check_pool(((src, types.float32), (dst, types.float32)), (s, ss, d, ds), "_transpose8")

    def codegen(context, builder, signature, args):
        st, stt, sst, dt, dtt, dst_t = signature.args
        i64 = ir.IntType(64)
        s0 = context.cast(builder, args[1], stt, types.int64)
        sstep = context.cast(builder, args[2], sst, types.int64)
        d0 = context.cast(builder, args[4], dtt, types.int64)
        dstep = context.cast(builder, args[5], dst_t, types.int64)
        rows = [builder.load(_vec_ptr(context, builder, st, args[0],
                                      builder.add(s0, builder.mul(sstep, ir.Constant(i64, i))), types.int64),
                             align=4) for i in range(8)]

        def shuffle(a, b, idx):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8), list(idx)))

        lo, hi = _T8_STAGES[0]
        t = [v for i in range(0, 8, 2) for v in (shuffle(rows[i], rows[i + 1], lo), shuffle(rows[i], rows[i + 1], hi))]
        lo, hi = _T8_STAGES[1]
        u = [shuffle(t[a], t[a + 2], idx) for a in (0, 1, 4, 5) for idx in (lo, hi)]
        lo, hi = _T8_STAGES[2]
        out = [shuffle(u[k], u[k + 4], lo) for k in range(4)] + [shuffle(u[k], u[k + 4], hi) for k in range(4)]
        for j in range(8):
            builder.store(out[j], _vec_ptr(context, builder, dt, args[3],
                                           builder.add(d0, builder.mul(dstep, ir.Constant(i64, j))), types.int64),
                          align=4)
        return context.get_dummy_value()

    return types.void(src, s, ss, dst, d, ds), codegen
