"""The digits of examples/digits.py trained data-parallel over MPI: each process
holds one part of the training set, and every step's gradient is the mean over
all parts (one all-reduce per step).  Process 0 then trains the same network in
one process on the whole training set and prints both test accuracies.

    pip install '.[mpi]'
    mpiexec -n 2 python -m mpi4py examples/distributed.py

Two runs: batch steepest descent with Adam, where the processes together take
exactly the one-process steps (the same accuracy, digit for digit), and
minibatch SGD as in examples/digits.py, where the global batch N(t) is the
union of the processes' batches of 32 / P (the same accuracy within noise,
the batches being drawn differently).
"""

import sys

import numpy as np

import symnet as sn
from symnet import datasets
from symnet.runtime import schedules


def digits_network():
    """The 64-128-64-10 network of examples/digits.py (its C is generated/digits.c)."""
    return sn.Network(sn.Input(64, name="I"), sn.Dense(128, "relu"), sn.Dense(64, "relu"),
                      sn.Dense(10), loss="softmax_cross_entropy")


def runs(P, sd_epochs, mb_epochs):
    """(label, fit arguments) of the two runs; minibatch is P batches of 32 / P."""
    return [
        ("sd + Adam", dict(method="sd", epochs=sd_epochs, lr=0.01, optimizer="adam")),
        (f"minibatch {P}×{max(1, 32 // P)}",
         dict(method="minibatch", epochs=mb_epochs, batch_size=max(1, 32 // P),
              lr=schedules.RobbinsMonro(0.2, tau=500), seed=0)),
    ]


def main(comm, sd_epochs=100, mb_epochs=60, seed=0, verbose=True):
    """Train both runs; returns [(label, distributed accuracy, one-process accuracy)]
    on process 0 and None on the others."""
    rank, P = comm.Get_rank(), comm.Get_size()
    X, y = datasets.load_digits()
    Xtr, Xte, ytr, yte = datasets.train_test_split(X, y, test_fraction=0.25, seed=seed)
    Ttr, Tte = datasets.one_hot(ytr, 10), datasets.one_hot(yte, 10)
    parts = np.array_split(np.arange(len(ytr)), P)
    mine = parts[rank]                      # this process's part of the training set
    if verbose and rank == 0:
        print(f"digits on {P} process(es), training parts of "
              f"{', '.join(str(len(p)) for p in parts)} examples")
    results = []
    for label, args in runs(P, sd_epochs, mb_epochs):
        model = digits_network().compile(dtype="float32", seed=seed)
        hist = model.fit(Xtr[mine], Ttr[mine], progress=False, comm=comm,
                         validation_data=(Xte, Tte), **args)
        if rank != 0:
            continue
        acc = (model.forward(Xte).argmax(axis=1) == yte).mean()
        alone = digits_network().compile(dtype="float32", seed=seed)
        one = dict(args, batch_size=32) if args["method"] == "minibatch" else args
        alone.fit(Xtr, Ttr, progress=False, **one)
        acc1 = (alone.forward(Xte).argmax(axis=1) == yte).mean()
        results.append((label, acc, acc1))
        if verbose:
            print(f"  {label:<16} {hist.epochs:>3} epochs, {hist.steps:>5} steps, "
                  f"{hist.wall_time:6.2f} s: test accuracy {acc:.2%}   "
                  f"(one process{', batch 32' if 'batch_size' in one else ''}: {acc1:.2%})")
    return results if rank == 0 else None


if __name__ == "__main__":
    try:
        from mpi4py import MPI
    except ImportError:
        sys.exit("this example needs mpi4py and an MPI: pip install '.[mpi]'")
    main(MPI.COMM_WORLD)
