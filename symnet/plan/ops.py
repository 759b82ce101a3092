"""The operations of a kernel plan (symnet.plan.lower): printable steps over named buffers,
each holding sympy expressions or buffer names that the emitter prints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import sympy as sp

LOSS = "<loss>"  # the loss accumulator as a statement target (no layer has this name)

# ------------------------------------------------------------------ operations

@dataclass
class MatMul:
    """C (+)= op(A)·op(B).  kind "nt": C[m,n] = Σ_k A[m,k]·B[n,k];
    "nn": C[m,n] = Σ_k A[m,k]·B[k,n]; "tn": C[m,n] = Σ_k A[k,m]·B[k,n].

    ``parts``: a product over the rows of several buffers at once (symnet.plan.stack):
    the pairs (A_t, B_t) it sums, A_t laid out one after the other from A and B_t from
    B, so that the C runs one product of K = batch·len(parts) rows; None: one pair."""

    kind: str
    C: str
    A: str
    B: str
    M: str | int
    N: str | int
    K: str | int
    accumulate: bool
    comment: str
    epilogue: "Epilogue | None" = None
    parts: list | None = None


@dataclass
class Epilogue:
    """What a product does to each element of its C once the sum over k is done,
    before anything else reads it: ``C[m,n] = act(bias[n] + C[m,n])`` with act "linear"
    (x) or "relu" (x if x > 0 else 0): the loop ``H[b,i] = relu(b1[i] + z_H1[b,i])`` that
    followed the product, applied to each block of C while the product still holds it
    (symnet.plan.fuse.fuse_epilogues); or act "mask", ``C[m,n] = C[m,n]·(1 if
    mask[m,n] > 0 else 0)`` (no bias): relu's derivative, ``δ_H1 = ∂L/∂H1·(1 if H1 > 0
    else 0)``, applied by the product that computes ∂L/∂H1 (symnet.plan.fuse.fuse_masks),
    ``mask`` an array of C's shape.  ``loop``: that loop's comment, for the C."""

    bias: str | None
    act: str
    loop: str
    mask: str | None = None


@dataclass
class Loop:
    """for each index in ``indices`` (name, extent): the statements, after CSE.

    ``stmts`` is a list of (target, index, op, expr) with op "=" or "+=";
    ``target`` LOSS (not a possible layer name) is the double accumulator of the
    loss.  With ``hoist``, a "+=" whose target does not depend on the innermost index
    sums into a local first (g_b[c] over y, x), so the innermost loop vectorises."""

    indices: list[tuple[str, str | int]]
    stmts: list[tuple[str, tuple[str, ...], str, sp.Expr]]
    comment: str
    hoist: bool = False
    # each statement a small matrix product per point of the other loop indices
    # (symnet.plan.products): the C then calls a product kernel; None: a plain loop
    product: list | None = None
    # targets zeroed by no one before: their "+=" over the summed index stores the
    # finished sum instead (symnet.plan.overwrite)
    fresh: set = field(default_factory=set)


@dataclass
class Conv:
    """A convolution's three contractions through im2col and matrix products.

    forward:  col[b][(k,u,v),(y,x)] = X[b,k,y·s+u−p,x·s+v−p] (0 outside), then
              Z[b] = W·col[b];
    backward: with ``gW``: gW (+)= Σ_b delta[b]·col[b]ᵀ (with ``deltaT``: one product
              over the batch with the delta transposed); with ``dX``: dcol = Wᵀ·delta[b]
              and dX[b,k,y·s+u−p,x·s+v−p] += dcol (col2im; dX zeroed before).
    With ``direct`` (a short window, stride 1 along x, no padding), the forward and the
    weight gradient read X's rows in place instead (no im2col); dX still goes through
    ``col`` as scratch.  Lower makes one from the terms whose index maps are a correlation's
    (``symnet.plan.correlate``); ``geo`` holds the sizes read from those maps."""

    mode: str                    # "forward" or "backward"
    X: str
    W: str
    col: str
    geo: dict
    comment: str
    Z: str | None = None
    delta: str | None = None
    gW: str | None = None
    dX: str | None = None
    accumulate: bool = False
    deltaT: str | None = None    # gW through delta transposed (few output positions)
    direct: bool = False         # forward and gW as direct loops over X's rows, no im2col


@dataclass
class Route:
    """Max pooling's backward: for each output element, target += delta at the
    first position of the window where the input equals the maximum."""

    loop: list                   # output loop (name, extent)
    window: list                 # summed indices (name, extent)
    x: object                    # ir.Access of the input element
    z: object                    # ir.Access of the max
    target: object               # ir.Access into the input's gradient
    delta: object                # ir.Access of the delta
    comment: str
    overwrite: bool = False      # target zeroed just before and no two windows share an
                                 # element: each element is written once, with "=", not "+="
    then: object = None          # the Loop that reads the target next, element by element,
                                 # fused in (see symnet.plan.fuse): the target is never stored


@dataclass
class Fill:
    buffer: str
    value: str
    comment: str = ""


@dataclass
class Zero:
    buffer: str
    size: str | int
    comment: str = ""


@dataclass
class SoftmaxXent:
    """A loss that couples the outputs of an example (softmax cross-entropy) of O
    against T, and dL_dO when ``grad``: per example, the sums, scalars, value and
    gradient of ``rule`` (``symnet.derive.coupled.RowLoss``, as derive made it)."""

    O: str
    T: str
    n: int
    grad: str | None
    weight: float = 1.0          # the output's loss weight (inside the rule's formulas)
    t_offset: int = 0            # first column of this output's targets in T
    t_stride: int | None = None  # width of T's rows (None: n)
    labels: bool = False         # T[b] is the class index of example b (not a row)
    rule: object = None          # the derived RowLoss (targets as rows)
    # a class per position: each example's outputs are ``groups`` rows of n classes
    # side by side (the output's last axis is the classes); with labels T[b] is a row
    # of ``groups`` class indices
    groups: int = 1
    first: bool = False          # the classes are the first axis: class k of q at k·groups + q

    @property
    def width(self) -> int:
        """Numbers of the output per example."""
        return self.n * self.groups

    @property
    def derived(self):
        """The rule for this op's targets: rows, or its form for class labels."""
        return self.rule.labels if self.labels else self.rule


def with_labels(op):
    """The op for integer class labels as targets (T[b] = class of example b)."""
    if isinstance(op, SoftmaxXent):
        return dataclasses.replace(op, labels=True)
    return op


@dataclass
class Rows:
    """A run of ops each of which works on every example alone (the layers of a
    tensor network between its matrix products), run on the batch in chunks of
    examples sn_lo ≤ b < sn_hi that threads take in turn.  ``grads`` (name, offset,
    size, kind) are sums over the examples: each chunk sums into its own ``size``
    numbers of partial sums, which are then added up in the order of the chunks and
    stored ("=") or added ("+=") into the gradient.  ``cost``: the work of one
    example in multiply-adds of the tiled products, for the number of threads;
    ``index`` numbers the runs of a plan (their C functions sn_rows_<index>)."""

    ops: list
    cost: float
    grads: list = field(default_factory=list)
    size: int = 0
    index: int = 0
    backward: bool = False       # a run of the backward pass (not emitted without training)


@dataclass
class BatchSum:
    """``buffer`` (row 0, ``size`` numbers) holds a sum over the examples of this call's
    batch; where a fit synchronises the batch over processes (``symnet.plan.batchsum``),
    the runtime's hook replaces it there by the sum over every process's batch.
    ``kind`` 0: a sum of the forward pass (the values as they are); 1: of the backward
    pass (derivatives, in this call's scale of the loss, 1/its batch).  Without a hook
    (the default, and exported C) nothing happens."""

    buffer: str
    size: int
    kind: int
    comment: str = ""


@dataclass
class Halves:
    """The loss-and-gradient pass of a small vector network (every product too small to
    share among threads) in chunks of the batch that threads take in turn, with one
    hand-over for the whole pass instead of one per product (symnet.plan.schedule).
    ``rows`` (``rows_labels``: targets as class labels): every op of the forward pass,
    the loss and the backward pass that works on each example alone, run on the
    examples sn_lo ≤ b < sn_hi of a chunk; ``grads`` (name, offset, size): the sums over
    the examples these ops make (bias gradients), kept per chunk in ``size`` numbers and
    added up in the order of the chunks.  ``sums``: the products that sum over the batch
    (weight gradients, Aᵀ·B with K the batch), run after the chunks on the whole batch,
    their rows of C shared among the same number of jobs.  ``cost``: multiply-adds per
    example, for the number of chunks and threads; ``update``: those gradients are all the
    trainable parameters' (then a step's update runs in the jobs that finish them);
    ``tail``: the ops after the loss, the same in ``rows`` and ``rows_labels`` (then left
    out of both, run after either); ``head``: the ops before it (the forward pass), the
    same way, run before either."""

    rows: list
    rows_labels: list | None
    sums: list
    grads: list
    size: int
    cost: float
    update: bool = False
    tail: list = field(default_factory=list)   # the ops after the loss both passes share
    head: list = field(default_factory=list)   # the ops before the loss both passes share
    # a tensor network's (symnet.plan.schedule.halves with tensor): chunks of ``chunk``
    # examples, products of their rows; the weight gradients' products in the chunks too,
    # chunk c > 0 summing into its partial sums, ``psize`` numbers at ``parts[C]`` of
    # each gradient C, the chunks' sets one after the other from per-row offset
    # ``parts_offset`` of work
    tensor: bool = False
    chunk: int = 8
    parts: dict = field(default_factory=dict)
    psize: int = 0
    parts_offset: int = 0
    late: list = field(default_factory=list)   # of sums: stacked products, after the chunks
    # a tensor network's weights that its chunks' products read as B (B, kind, N, K), packed
    # once per pass for all the chunks (symnet.plan.schedule.packs)
    packs: list = field(default_factory=list)

    @property
    def pack_of(self) -> dict:
        """(B, kind) → its index in ``packs``."""
        return {(b, kind): i for i, (b, kind, _, _) in enumerate(self.packs)}

    @property
    def pack_size(self) -> int:
        """Reals of work after the gradients' place that hold the packed weights: room
        for a register tile of up to 32 columns (the C packs none where its own figures
        would not fit) and each at a cache line (16 reals ≥ 64 bytes)."""
        return sum((N + 31) * K + 16 for _, _, N, K in self.packs)
