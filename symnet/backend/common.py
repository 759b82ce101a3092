"""What every backend tells its runtime's users about a plan: sizes and layout.

``plan_meta`` is the runtime's ``meta`` (besides what a backend adds, such as
the C source): the flat parameter layout, the inputs' and outputs' widths and
shapes, and whether the loss takes integer class labels.  Model, training and
the readers of a model take these from ``runtime.meta``, never from the plan.
"""

from __future__ import annotations


def plan_meta(plan, description: dict, dtype: str) -> dict:
    """The backend-neutral facts about ``plan`` compiled for ``dtype``."""
    graph = plan.graph
    out = plan.buffers[plan.output]
    loss = graph.loss.name if len(graph.outputs) == 1 else None
    return {
        "dtype": dtype, "n_params": plan.n_params,
        "work_per_row": plan.work_per_row, "n_in": graph.n_in,
        # scratch after the gradients: the weights a chunked pass packs (in-process C)
        "work_extra": plan.halves.pack_size if plan.halves else 0,
        "n_out": graph.n_out, "input": graph.input_name,
        "in_shape": list(graph.in_shape), "out_shape": list(graph.output.out_shape),
        "output_offset": out.offset, "labels": bool(plan.loss_labels),
        # a class per position: the classes of each (softmax cross-entropy, one output)
        "classes": graph.classes.get(graph.outputs[0]) if len(graph.outputs) == 1 else None,
        # ... its first axis (channels first: class k of position q at k·positions + q)
        "classes_first": len(graph.outputs) == 1 and graph.outputs[0] in graph.classes_first,
        "n_trainable": plan.n_trainable,
        # how the epoch driver counts correct examples (one output only)
        "accuracy": {"softmax_cross_entropy": "argmax", "bce": "threshold"}.get(loss),
        "inputs": [[name, width] for name, width in graph.inputs],
        "outputs": [[o, plan.buffers[o].offset, graph.node(o).n_out]
                    for o in graph.outputs],
        "params": [{"name": p.name, "shape": list(p.shape), "init": p.init,
                    "offset": plan.buffers[p.name].offset, "trainable": p.trainable}
                   for p in graph.params()],
        "description": description,
        # the sums over the batch in the order a training call reaches them, each followed
        # by the C's reduce hook (symnet.plan.batchsum), and those left unsplit
        "batch_sums": [dict(s) for s in plan.batch_sums],
        "unsynced": list(plan.unsynced),
        # where the batch sums of BatchNorm lie in work (per row; the model reads them)
        "work_offsets": {b.name: b.offset for b in plan.buffers.values() if b.kind == "work"
                         and any(n.kind == "batchnorm" and b.name.startswith(f"z_{n.name}")
                                 for n in graph.nodes)},
    }


def work_size(meta: dict, batch: int) -> int:
    """Numbers of scratch for a call on ``batch`` examples (WORK_SIZE in the header)."""
    return batch * meta["work_per_row"] + meta["n_params"] + meta.get("work_extra", 0)


def train_work_size(meta: dict, batch_size: int) -> int:
    """Numbers of scratch for the epoch driver (TRAIN_WORK_SIZE)."""
    return work_size(meta, batch_size) + batch_size * (meta["n_in"] + meta["n_out"])
