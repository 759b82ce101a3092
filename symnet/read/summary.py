"""What a network costs: parameters, memory and floating-point work per step.

Exact, because every shape is known when compiling; the figures come from the
kernel plan (``symnet.plan.lower``), i.e. the buffers the generated C really uses.

What is counted, per layer, for a batch of B examples and a dtype of s bytes:

- ``params``: the numbers in the layer's parameters (W: out·in, b: out).
- ``param_bytes``: params · s.
- ``activation_bytes``: the forward buffers of the layer — its sums z (one per
  reduction) and its output H, each B·out numbers — times s.
- ``gradient_bytes``: the parameter gradients g_W, g_b (params · s) plus the
  backward buffers of the layer — dL_dH (absent at an output whose loss is
  fused with its activation) and δ (B·out each) — times s.
- ``flops_forward`` / ``flops_backward``: the matrix products and convolutions only, a
  multiply-add counted as 2 flops: z = X·Wᵀ costs 2·B·out·in; g_W = δᵀ·X
  costs 2·B·out·in; dL_dX = δ·W costs 2·B·out·in again except at the first
  layer, whose input needs no gradient.  Element-wise work (activations,
  their derivatives, the loss, bias sums) is not counted: its cost depends on
  the function (one tanh is not one flop) and it is O(B·out), small beside
  the O(B·out·in) products.  A convolution counts 2·B·out·OH·OW·in·kh·kw per
  contraction, like the matrix product its im2col form is; its input gradient is
  left out where derive says no layer below needs it.  A contraction over a
  sequence's last axis (``Pointwise``, attention's projections) counts
  2·B·steps·out·in; attention's scores and weighted sum count 2·B per term of
  their sums, once forward and once per gradient term.  Other reductions
  (general layers, pooling) are not counted.
- the update θ ← θ − lr·g: 2 flops per trained parameter, in the total only.

``params`` counts every number a layer keeps, as Keras's summary does: also those that no
gradient step changes (``trainable=False`` layers, BatchNorm's running statistics and
Dropout's random stream); the line under the table says how many of them train
(``Summary.trainable``), as PyTorch's ``sum(p.numel() for p in m.parameters()
if p.requires_grad)`` counts.

Where threads run the batch in chunks, each chunk's partial sums of the gradients take
``scratch_bytes`` more (counted in ``bytes``).  Buffers that are never alive at once share
their place in the work array (symnet.plan.share): each layer's columns count its
buffers all the same, and ``shared_bytes``, what they add up to beyond that place, is
taken off ``bytes``, which is what the model allocates.  The input X and the targets T are the
caller's arrays and are not counted.

>>> import symnet as sn
>>> net = sn.Network(sn.Input(3), sn.Dense(4, "relu"), sn.Dense(2), loss="mse")
>>> s = summarize(net, batch_size=10, dtype="float32")
>>> s.total("params"), s.flops_per_step
(26, 1012)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..derive.chain import delta_name, upstream_name

COLUMNS = ("params", "param_bytes", "activation_bytes", "gradient_bytes",
           "flops_forward", "flops_backward")


@dataclass
class LayerCost:
    """One row of the table (see the module docstring for the definitions)."""

    name: str
    n_in: int
    n_out: int
    activation: str
    params: int
    param_bytes: int
    activation_bytes: int
    gradient_bytes: int
    flops_forward: int
    flops_backward: int
    shapes: str = ""             # "784 → 3456" for vectors, "(1, 28, 28) → (6, 24, 24)"


@dataclass(repr=False)
class Summary:
    """The table: ``layers`` (LayerCost rows) and totals.  ``str()`` and ``repr()`` are
    the table, so that ``net.summary()`` at a prompt and ``print(net.summary())`` show
    it once each."""

    layers: list[LayerCost]
    batch_size: int
    dtype: str
    update_flops: int
    # per-chunk partial sums of the gradients (a batch run in chunks by threads), bytes
    scratch_bytes: int = 0
    # bytes of the layers' buffers that share their place with others (symnet.plan.share)
    shared_bytes: int = 0
    # the parameters the update trains (None: all of them)
    trainable: int | None = None

    def total(self, column: str) -> int:
        if column not in COLUMNS:
            raise ValueError(f"no column {column!r}; columns: {', '.join(COLUMNS)}")
        return sum(getattr(row, column) for row in self.layers)

    @property
    def flops_per_step(self) -> int:
        """Forward + backward matrix products + the update."""
        return (self.total("flops_forward") + self.total("flops_backward")
                + self.update_flops)

    @property
    def bytes(self) -> int:
        """Parameters, activations, gradients and the chunks' partial sums together, as
        allocated: less the bytes of buffers that share their place with others."""
        return sum(self.total(c) for c in ("param_bytes", "activation_bytes",
                                           "gradient_bytes")) + self.scratch_bytes \
            - self.shared_bytes

    def __str__(self):
        head = ["layer", "in → out", "activation", "params", "param B", "activ. B",
                "grad B", "fwd flops", "bwd flops"]
        rows = [[r.name, r.shapes or f"{r.n_in} → {r.n_out}", r.activation]
                + [f"{getattr(r, c):,}" for c in COLUMNS] for r in self.layers]
        rows.append(["total", "", ""] + [f"{self.total(c):,}" for c in COLUMNS])
        widths = [max(len(x[k]) for x in [head] + rows) for k in range(len(head))]

        def fmt(cells):
            return "  ".join(c.ljust(w) if k < 3 else c.rjust(w)
                             for k, (c, w) in enumerate(zip(cells, widths))).rstrip()
        lines = [(f"batch size {self.batch_size}, {self.dtype} "
                  f"({np.dtype(self.dtype).itemsize} bytes per number)"), fmt(head)]
        lines += [fmt(r) for r in rows[:-1]]
        lines += ["-" * len(fmt(head)), fmt(rows[-1])]
        total = self.total("params")
        if self.trainable is not None and self.trainable != total:
            lines.append(f"parameters: {total:,}, of which {self.trainable:,} train and "
                         f"{total - self.trainable:,} do not (trainable=False layers, "
                         "BatchNorm's running statistics, Dropout's random stream)")
        lines.append(f"update θ ← θ − lr·g: {self.update_flops:,} flops; "
                     f"flops per training step: {self.flops_per_step:,} "
                     "(matrix products and the sums of norm, softmax, batchnorm and "
                     "embedding layers, multiply-add = 2; "
                     "other element-wise work not counted)")
        scratch = (f" and {self.scratch_bytes:,} of the chunks' partial sums"
                   if self.scratch_bytes else "")
        shared = (f"; the columns add up to {self.shared_bytes:,} more: buffers that are "
                  "never alive at once share their place" if self.shared_bytes else "")
        lines.append(f"memory: {self.bytes:,} bytes of parameters, activations and "
                     f"gradients{scratch} (inputs and targets not counted{shared})")
        return "\n".join(lines)

    def show(self, print_fn=None) -> Summary:
        """The table given to ``print_fn`` once (None: to nobody); returns self."""
        if print_fn is not None:
            print_fn(str(self))
        return self

    __repr__ = __str__

    def as_dict(self) -> dict:
        return {"batch_size": self.batch_size, "dtype": self.dtype,
                "update_flops": self.update_flops, "scratch_bytes": self.scratch_bytes,
                "shared_bytes": self.shared_bytes, "flops_per_step": self.flops_per_step,
                "trainable": self.total("params") if self.trainable is None
                else self.trainable,
                "layers": [{f.name: getattr(r, f.name) for f in fields(r)}
                           for r in self.layers]}


def _shapes(node) -> str:
    if len(node.in_shape) == 1 and len(node.space) == 1:
        return f"{node.n_in} → {node.n_out}"
    fmt = lambda s: str(s[0]) if len(s) == 1 else str(tuple(s))  # noqa: E731
    return f"{fmt(node.in_shape)} → {fmt(node.out_shape)}"


def summarize(network, batch_size: int = 32, dtype: str = "float32") -> Summary:
    """The cost table of a network for one batch size and dtype."""
    from ..plan.lower import plan as make_plan
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    B, size = int(batch_size), np.dtype(dtype).itemsize
    p = make_plan(network.graph())
    work = {b.name: int(np.prod(b.shape[1:])) for b in p.buffers.values() if b.kind == "work"}
    by_node = {g.node.name: g for g in p.grads}    # derive's hand-off: the terms that exist
    rows, counted = [], set()
    for node in p.graph.nodes:
        # a layer used at several places: its parameters count once, at the first use
        own = [q for q in node.params if q.name not in counted]
        counted.update(q.name for q in node.params)
        n_params = sum(int(np.prod(q.shape)) for q in own)
        forward = [r.name for r in node.reductions] + [node.name, f"col_{node.name}"]
        backward = [upstream_name(node.name)] + [delta_name(node, r) for r in node.reductions]
        fwd = bwd = 0   # a contraction and each of its gradient products: same flops
        grad = by_node[node.name]
        for r in node.reductions:
            if r.contraction:
                mm = 2 * B * node.n_out * node.widths.get(node.red_input(r), node.n_in)
                mm //= max(r.rows, 1)          # per position of a sequence: rows·N·K
                fwd, bwd = fwd + mm, bwd + mm * len(grad.products[r.name])
            elif node.kind in ("scores", "attend"):   # attention's two batched products
                mm = 2 * B * int(np.prod([e for _, e in node.reduction_loop(r)[1:]]))
                fwd, bwd = fwd + mm, bwd + mm * len(grad.summands[r.name])
            elif r.name in p.correlations:      # a correlation: im2col products
                g = p.correlations[r.name].geo
                mm = 2 * B * g["cout"] * int(np.prod(g["out_hw"])) * g["cin"] \
                    * int(np.prod(g["kernel"]))
                fwd, bwd = fwd + mm, bwd + mm * len(grad.summands[r.name])
            elif node.kind == "batchnorm":
                # Σ over the batch once per channel (symnet.plan.batchsum): B·S terms for
                # each of C channels, B·n_out in all
                terms = 2 * B * node.n_out
                fwd, bwd = fwd + terms, bwd + terms * len(grad.summands[r.name])
            elif node.kind in ("norm", "mean", "rstd", "softmax", "embedding"):
                # Σ over the last axis, the batch or the table, for every output element
                terms = 2 * B * node.n_out * int(np.prod([B if e == "batch" else e
                                                          for _, e in r.space]))
                fwd, bwd = fwd + terms, bwd + terms * len(grad.summands[r.name])
        label = node.activation.name if node.activation is not None else node.kind
        rows.append(LayerCost(
            node.name, node.n_in, node.n_out,
            "custom" if label.startswith("custom:") else label,
            n_params, n_params * size,
            sum(B * work[n] * size for n in forward if n in work),
            n_params * size + sum(B * work[n] * size for n in backward if n in work),
            fwd, bwd, _shapes(node)))
    # the threads' chunks keep partial gradient sums per example after every buffer
    scratch = (p.work_per_row - p.part_offset) * B * size if p.part_offset else 0
    return Summary(rows, B, dtype, 2 * p.n_trainable, scratch, p.shared * B * size,
                   p.n_trainable)
