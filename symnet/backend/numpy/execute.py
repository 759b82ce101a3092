"""A kernel plan executed with NumPy, op by op: the plan's readable executable form.

Every op of ``symnet.plan.lower`` has one NumPy reading here, the same formulas the C
prints (``symnet.backend.c.emit``), evaluated over whole index grids:

- ``Loop``: each statement's right-hand side is evaluated at every point of the
  loop's index space where all its accesses fall inside their arrays (the C clips
  its loop ranges to the same points), then stored ("="), summed in loop order
  ("+=", ``np.add.at``) or maximised ("max");
- ``MatMul``: the product on the buffers seen as matrices;
- ``Conv``: im2col by index arrays, then products (col2im by ``np.add.at``);
- ``Route``: δ to the first element of each window equal to the maximum, then the
  loop fused after it, if any;
- ``SoftmaxXent``: its derived rule (sums over the outputs, then the value and
  gradient) on every example at once;
- ``Zero``, ``Fill``: as their C comments say.

The per-example runs (``Plan.split_*``, ``Rows``) are a thread schedule of the C
and are not used: the unsplit passes compute the same values.
"""

from __future__ import annotations

import numpy as np

from ...plan.ops import LOSS, BatchSum, Conv, Fill, Loop, MatMul, Route, Rows, SoftmaxXent, Zero


def _functions() -> dict:
    """NumPy spellings of symnet's own sympy functions (stable, as the C helpers)."""
    def sigmoid(x):
        x = np.asarray(x)
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def softplus(x):
        x = np.asarray(x)
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    def dropout_mask(seed, step, training, b, e, p):
        """The C's sn_dropout: Philox4x32-10 with counter (e, b, step, 0), key (seed, 0);
        kept where the first output's top 24 bits as a number in [0, 1) are ≥ p."""
        seed, step, training, b, e, p = np.broadcast_arrays(
            *(np.asarray(v) for v in (seed, step, training, b, e, p)))
        m32 = np.uint64(0xFFFFFFFF)
        c0, c1 = e.astype(np.uint64) & m32, b.astype(np.uint64) & m32
        c2 = (step + 0.5).astype(np.uint64) & m32
        c3 = np.zeros_like(c0)
        k0, k1 = (seed + 0.5).astype(np.uint64) & m32, np.zeros_like(c0)
        for _ in range(10):
            p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
            h0, l0, h1, l1 = p0 >> np.uint64(32), p0 & m32, p1 >> np.uint64(32), p1 & m32
            c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m32, (k1 + np.uint64(0xBB67AE85)) & m32
        real = np.result_type(p)
        u = (c0 >> np.uint64(8)).astype(real) * real.type(1.0 / 16777216.0)
        mask = np.where(u >= p, 1 / (1 - p), 0)
        return np.where(training > 0.5, mask, 1)
    return {"sigmoid": sigmoid, "softplus": softplus, "dropout_mask": dropout_mask}


def _view(arr, rank: int):
    """A batch array as an access of ``rank`` indices reads it: a Flatten's
    element O[b,i] of a (batch, c, y, x) buffer is its row-major flat element, as
    in the C (a view, never a copy).  More indices than axes: those past the last
    but one have stride 1 in the C (a step of a GRU's sequence, G_1[b,i,x] of a
    (batch, 4) buffer with i < 1), here axes of one before the last."""
    if arr.ndim < rank and arr.ndim >= 2:
        return arr.reshape(*arr.shape[:-1], *([1] * (rank - arr.ndim)), arr.shape[-1])
    if arr.ndim == rank or rank != 2 or arr.ndim < 2:
        return arr
    return arr.reshape(arr.shape[0], -1)


class Compiled:
    """One plan's ops with their formulas turned into NumPy functions (once)."""

    def __init__(self, plan, dtype):
        import sympy as sp

        from ...scalar.cprint import numeric
        self.plan, self.dtype = plan, np.dtype(dtype)
        self.buffers = plan.buffers
        self.symbols = plan.symbols
        self._fns = {}
        modules = [_functions(), "numpy"]
        for ops in (plan.forward, plan.loss, plan.backward, plan.loss_labels,
                    plan.backward_labels):
            for op in ops:
                loops = [op] if isinstance(op, Loop) else \
                    [op.then] if isinstance(op, Route) and op.then is not None else []
                for loop in loops:
                    for st in loop.stmts:
                        key = id(st)
                        if key in self._fns:
                            continue
                        expr = numeric(st[3])
                        args = sorted(expr.free_symbols, key=str)
                        fn = sp.lambdify(args, expr, modules=modules)
                        self._fns[key] = (fn, args)

    # ------------------------------------------------------------------ passes
    def run(self, ops: list, env: dict, batch: int) -> float:
        """Run ``ops`` on the arrays of ``env`` (name → array, batch arrays with
        their batch dimension first); returns the loss they accumulate (a sum over
        the examples, as the C's ``loss``)."""
        loss = 0.0
        with np.errstate(all="ignore"):
            for op in ops:
                if isinstance(op, Loop):
                    loss += self._loop(op, env, batch)
                elif isinstance(op, MatMul):
                    self._matmul(op, env, batch)
                elif isinstance(op, Zero):
                    env[op.buffer][...] = 0
                elif isinstance(op, Fill):
                    env[op.buffer][...] = _value(op.value)
                elif isinstance(op, SoftmaxXent):
                    loss += self._softmax_xent(op, env, batch)
                elif isinstance(op, Conv):
                    self._conv(op, env, batch)
                elif isinstance(op, Route):
                    self._route(op, env, batch)
                elif isinstance(op, Rows):
                    loss += self.run(op.ops, env, batch)
                elif isinstance(op, BatchSum):
                    pass        # this backend's sums are its batch's (no hook)
                else:  # pragma: no cover - a new op must be given its reading here
                    raise NotImplementedError(f"the numpy backend has no reading of "
                                              f"{type(op).__name__}")
        return loss

    # -------------------------------------------------------------- the loops
    def _grid(self, indices, batch):
        """name → index array broadcast along its own axis of the loop's space."""
        sizes = [batch if e == "batch" else int(e) for _, e in indices]
        grid = {}
        for k, (name, _) in enumerate(indices):
            shape = [1] * len(sizes)
            shape[k] = sizes[k]
            grid[name] = np.arange(sizes[k]).reshape(shape)
        return grid, tuple(sizes)

    def _positions(self, index, grid, shape):
        """The positions of an access over the grid, one array per dimension."""
        out = []
        for ix in index:
            if isinstance(ix, str):
                out.append(grid[ix])
            else:
                pos = ix.const
                for name, c in ix.terms:
                    pos = pos + c * grid[name]
                out.append(np.asarray(pos))
        return out

    def _loop(self, op: Loop, env: dict, batch: int) -> float:
        grid, sizes = self._grid(op.indices, batch)
        accesses = []                         # (array name, positions) of every access
        for target, index, _, expr in op.stmts:
            if target != LOSS:
                accesses.append((target, self._positions(index, grid, sizes)))
            for sym in expr.free_symbols:
                acc = self.symbols.get(sym)
                if acc is not None and acc.array not in ("inv_batch", "inv_stat"):
                    accesses.append((acc.array, self._positions(acc.index, grid, sizes)))
        valid = np.ones(sizes, bool)
        for name, pos in accesses:           # the C's clipped loop ranges
            shape = _view(env[name], len(pos)).shape
            for p, n in zip(pos, shape):
                if p.ndim and (p.min() < 0 or p.max() >= n):
                    valid &= (p >= 0) & (p < n)
        where = np.nonzero(valid)            # the loop's points in C order
        point = {name: where[k] for k, (name, _) in enumerate(op.indices)}
        for target, index, _, _ in op.stmts:
            # its sum stored, not added (plan.overwrite): the elements it writes start at
            # 0 (only those: other loops may write the buffer's other pieces)
            if target in op.fresh:
                _view(env[target], len(index))[self._at(index, point)] = 0
        loss = 0.0
        for st in op.stmts:
            target, index, kind, _ = st
            fn, args = self._fns[id(st)]
            values = []
            for sym in args:
                acc = self.symbols.get(sym)
                if acc is None and sym.name in point:      # a loop index as a number
                    values.append(point[sym.name])
                    continue
                if acc is None and sym.name not in ("inv_batch", "inv_stat"):  # pragma: no cover
                    raise ValueError(f"symbol {sym} of {target} is no array element")
                if acc is None or acc.array in ("inv_batch", "inv_stat"):
                    values.append(self.dtype.type(1) / self.dtype.type(batch))
                    continue
                values.append(_view(env[acc.array], len(acc.index))[self._at(acc.index, point)])
            value = fn(*values)
            count = where[0].size if where else 1
            if target == LOSS:
                loss += float(np.sum(np.broadcast_to(np.asarray(value, np.float64), (count,))))
                continue
            arr = _view(env[target], len(index))
            at = self._at(index, point)
            value = np.broadcast_to(np.asarray(value, arr.dtype), (count,))
            if kind == "=":
                arr[at] = value
            elif kind == "+=":
                np.add.at(arr, at, value)
            elif kind == "max":
                np.maximum.at(arr, at, value)
            else:  # pragma: no cover
                raise NotImplementedError(kind)
        return loss

    @staticmethod
    def _at(index, point):
        """Index arrays of an access at the loop's points (flat, in C order)."""
        out = []
        for ix in index:
            if isinstance(ix, str):
                out.append(point[ix])
            else:
                pos = ix.const
                for name, c in ix.terms:
                    pos = pos + c * point[name]
                out.append(pos)
        return tuple(out)

    # ----------------------------------------------------------- the products
    def _matrix(self, name, env):
        a = env[name]
        return a.reshape(a.shape[0], -1)

    def _matmul(self, op: MatMul, env: dict, batch: int):
        C = self._matrix(op.C, env)
        if op.parts:      # Σ_t A_tᵀ·B_t (symnet.plan.stack), pair by pair
            r = sum(self._matrix(A, env).T @ self._matrix(B, env) for A, B in op.parts)
            if op.accumulate:
                C += r
            else:
                C[...] = r
            return
        A, B = self._matrix(op.A, env), self._matrix(op.B, env)
        # the rows of a product over batch·R rows (a Linear at each of R positions):
        # the arrays as (rows, width) by the product's own widths
        width = {"nt": (op.K, op.K, op.N), "nn": (op.K, op.N, op.N),
                 "tn": (op.M, op.N, None)}[op.kind]
        if all(isinstance(w, int) for w in width[:2]):
            A, B = A.reshape(-1, width[0]), B.reshape(-1, width[1])
            if width[2] is not None:
                C = env[op.C].reshape(-1, width[2])
        if op.kind == "nt":
            r = A @ B.T
        elif op.kind == "nn":
            r = A @ B
        else:                                  # "tn"
            r = A.T @ B
        if op.accumulate:
            C += r
        else:
            C[...] = r
        if op.epilogue is not None:            # the loop after it (symnet.plan.fuse)
            self._epilogue(op.epilogue, C, env)

    @staticmethod
    def _epilogue(e, C, env):
        """C = act(bias + C) over its columns, or C·(1 if mask > 0 else 0) (ops.Epilogue)."""
        if e.act == "mask":
            C *= np.where(env[e.mask].reshape(C.shape) > 0, 1, 0).astype(C.dtype)
            return
        bias = env[e.bias].reshape(-1)
        C = C.reshape(-1, bias.size)        # a view: the rows of every position
        C += bias
        if e.act == "relu":
            C[...] = np.where(C > 0, C, 0)

    def _softmax_xent(self, op: SoftmaxXent, env: dict, batch: int) -> float:
        """The derived rule of a coupled loss (``symnet.derive.coupled``) on every
        example at once: O[b,k] and T[b,k] as (batch, n) arrays, each sum and scalar
        a (batch, 1) column, the label y a (batch, 1) column of class indices."""
        import sympy as sp

        from ...derive.coupled import INV_BATCH
        rule = op.derived
        rows = batch * op.groups          # a class per position: a row for each position

        def as_rows(A):
            """(rows, n): each position's classes in a row (channels first: a copy)."""
            if op.first:
                return A.reshape(batch, op.n, op.groups).transpose(0, 2, 1).reshape(rows, op.n)
            return A.reshape(rows, op.n)
        O = as_rows(self._matrix(op.O, env))
        T = env[op.T].reshape(batch, -1)
        values = {rule.k: np.arange(op.n).reshape(1, -1),
                  INV_BATCH: O.dtype.type(1) / batch}
        unlabeled = None
        if op.labels:
            y = T[:, :op.groups].reshape(rows, 1).astype(np.int64)
            if op.groups > 1:         # label −1: a position without a target
                unlabeled = y[:, 0] < 0
                y = np.where(y < 0, 0, y)
            values.update({rule.y: y, rule.o_y: np.take_along_axis(O, y, axis=1)})
        else:
            stride = op.t_stride or op.width
            values[rule.t] = as_rows(T.reshape(batch, stride)[
                :, op.t_offset:op.t_offset + op.width])
        values[rule.o] = O

        def run(expr):
            key = ("coupled", expr)
            if key not in self._fns:
                args = sorted(expr.free_symbols, key=str)
                self._fns[key] = (sp.lambdify(args, expr, modules=[_functions(), "numpy"]),
                                  args)
            fn, args = self._fns[key]
            return np.asarray(fn(*(values[a] for a in args)), O.dtype)
        for r in rule.sums:
            each = np.broadcast_to(run(r.summand), O.shape)
            values[r.symbol] = (each.max if r.op == "max" else each.sum)(axis=1, keepdims=True)
        for sym, e in rule.scalars:
            values[sym] = run(e)
        each = np.broadcast_to(run(rule.value), (rows, 1)).astype(np.float64)
        if unlabeled is not None:
            each = np.where(unlabeled[:, None], 0.0, each)
        loss = float(np.sum(each))
        if op.grad:
            grad = np.array(np.broadcast_to(run(rule.grad), O.shape))
            if unlabeled is not None:
                grad[unlabeled] = 0
            out = self._matrix(op.grad, env)
            if op.first:
                out.reshape(batch, op.n, op.groups)[...] = \
                    grad.reshape(batch, op.groups, op.n).transpose(0, 2, 1)
            else:
                out.reshape(rows, op.n)[...] = grad
        return loss

    # ------------------------------------------------------------ convolution
    def _im2col_index(self, geo):
        """(channel, row, column) index arrays of shape (cin·KH·KW, OH·OW) into the
        input, and where they fall inside it."""
        key = id(geo)
        hit = getattr(self, "_cols", {}).get(key)
        if hit is not None:
            return hit
        (H, W), (KH, KW), (OH, OW) = _two(geo["in_hw"]), _two(geo["kernel"]), \
            _two(geo["out_hw"])
        (sy, sx), (py, px), (dy, dx) = _two(geo["stride"]), _two(geo["pad"]), \
            _two(geo["dilation"])
        k, u, v = np.meshgrid(np.arange(geo["cin"]), np.arange(KH), np.arange(KW),
                              indexing="ij")
        y, x = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
        rows = y.reshape(1, -1) * sy + u.reshape(-1, 1) * dy - py
        cols = x.reshape(1, -1) * sx + v.reshape(-1, 1) * dx - px
        chans = np.broadcast_to(k.reshape(-1, 1), rows.shape)
        inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
        hit = (chans, np.clip(rows, 0, H - 1), np.clip(cols, 0, W - 1), inside)
        self.__dict__.setdefault("_cols", {})[key] = hit
        return hit

    def _conv(self, op: Conv, env: dict, batch: int):
        geo = op.geo
        chans, rows, cols, inside = self._im2col_index(geo)
        X = env[op.X].reshape(batch, geo["cin"], *_two(geo["in_hw"]))
        W = env[op.W].reshape(geo["cout"], -1)
        col = env[op.col].reshape(batch, *inside.shape)
        if op.mode == "forward":
            col[...] = np.where(inside, X[:, chans, rows, cols], 0)
            env[op.Z].reshape(batch, geo["cout"], -1)[...] = W @ col
            return
        delta = env[op.delta].reshape(batch, geo["cout"], -1)
        if op.gW is not None:
            gW = env[op.gW].reshape(geo["cout"], -1)
            g = np.einsum("bcp,bqp->cq", delta, col)
            if op.accumulate:
                gW += g
            else:
                gW[...] = g
        if op.dX is not None:
            dcol = np.where(inside, W.T @ delta, 0)          # (batch, cin·KH·KW, OH·OW)
            dX = env[op.dX].reshape(batch, geo["cin"], *_two(geo["in_hw"]))
            b = np.arange(batch).reshape(-1, 1, 1)
            np.add.at(dX, (b, chans[None], rows[None], cols[None]), dcol)

    # ------------------------------------------------------------ max pooling
    def _route(self, op: Route, env: dict, batch: int):
        loop = list(op.loop) + list(op.window)
        grid, sizes = self._grid(loop, batch)
        x = env[op.x.array]
        pos = self._positions(op.x.index, grid, sizes)
        valid = np.ones(sizes, bool)
        for p, n in zip(pos, x.shape):
            valid &= (p >= 0) & (p < n)
        clipped = [np.clip(np.broadcast_to(p, sizes), 0, n - 1) for p, n in zip(pos, x.shape)]
        out_grid = {k: v for k, v in grid.items()}
        z = env[op.z.array][tuple(np.broadcast_to(p, sizes) for p in
                                  self._positions(op.z.index, out_grid, sizes))]
        equal = valid & (x[tuple(clipped)] == z)
        n_out = int(np.prod(sizes[:len(op.loop)]))
        flat = equal.reshape(n_out, -1)
        first = flat.argmax(axis=1)
        hit = flat[np.arange(n_out), first]
        # the point (output, first window element) of each hit, in C order
        out_at = np.nonzero(np.ones(sizes[:len(op.loop)], bool))
        win_at = np.unravel_index(first, sizes[len(op.loop):])
        point = {name: a[hit] for (name, _), a in zip(op.loop, out_at)}
        point.update({name: a[hit] for (name, _), a in zip(op.window, win_at)})
        target = env[op.target.array]
        if op.overwrite or op.then is not None:
            target[...] = 0
        delta = env[op.delta.array][self._at(op.delta.index, point)]
        np.add.at(target, self._at(op.target.index, point), delta)
        if op.then is not None:
            self._loop(op.then, env, batch)


def _two(v):
    """A 2-D size (symnet.plan.correlate gives a 1-D correlation height 1)."""
    return tuple(int(n) for n in v)


def _value(text: str) -> float:
    return {"-INFINITY": -np.inf, "INFINITY": np.inf}.get(text) or float(text)
