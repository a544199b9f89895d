"""Data-parallel training across the ranks of an MPI job (see docs/distributed.md).

    pip install -e '.[mpi]'
    mpiexec -n 2 python examples/train_distributed.py                  # 2 processes
    mpiexec -n 2 python examples/train_distributed.py --epochs 3 --save model.npz
    python examples/train_distributed.py                                # 1 process, same result

Every rank builds the same data (a fixed seed here; a real job reads the same files on every
rank). fit(..., comm=group) starts all ranks from rank 0's weights, splits each global batch of
--batch-size rows across the ranks and sums their gradients with one allreduce per step, so
the weights equal a single-process run with the same batch size. With CuPy, each rank uses
the GPU of its node-local rank. Rank 0 prints the history and samples/s and saves the model.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import gpumlp as gm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="784,256,256,10", help="layer widths (default: the mnist configuration)")
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=128, help="global minibatch, split across the ranks")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--backend", default="auto", choices=["auto", "numpy", "cupy"])
    parser.add_argument("--save", help="rank 0 writes the trained model here (.npz)")
    args = parser.parse_args()

    group = gm.distributed.init("mpi", backend=args.backend)  # before the model: picks this rank's GPU
    sizes = [int(s) for s in args.sizes.split(",")]
    X, y = gm.load_dataset(
        "classification",
        n_samples=args.samples + args.samples // 10,
        n_features=sizes[0],
        n_classes=sizes[-1],
        separation=0.15,
        seed=0,
    )
    X = X.astype(args.dtype)
    X_train, X_val, y_train, y_val = gm.train_test_split(X, y, test_size=1 / 11, seed=0)

    model = gm.MLP(sizes, dtype=args.dtype, backend=args.backend, seed=0)
    epoch_times: list[float] = []
    extra = {"momentum": args.momentum} if args.optimizer == "sgd" else {}
    t0 = time.perf_counter()
    history = model.fit(
        X_train,
        y_train,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(X_val, y_val),
        seed=0,
        progress=True,
        comm=group,
        callbacks=[lambda m, e, logs: epoch_times.append(logs["time"])],
        **extra,
    )
    wall = time.perf_counter() - t0
    if group.is_root:
        accuracy = float(np.mean(model.predict(X_val).argmax(axis=1) == y_val))
        steady = epoch_times[1:] or epoch_times  # the first epoch also allocates the buffers
        rate = X_train.shape[0] / (sum(steady) / len(steady))
        print(
            f"ranks {group.size}  backend {model.backend.name}  sizes {sizes}  global batch {args.batch_size} "
            f"({args.batch_size // group.size} per rank)  {X_train.shape[0]} samples"
        )
        for e, (loss, val) in enumerate(zip(history["loss"], history["val_loss"]), 1):
            print(f"epoch {e}: loss {loss:.5f}  val_loss {val:.5f}  {epoch_times[e - 1]:.2f} s")
        print(f"val accuracy {accuracy:.4f}  train {rate:,.0f} samples/s  fit wall {wall:.1f} s")
        if args.save:
            model.save(args.save)
            print(f"saved {args.save}")


if __name__ == "__main__":
    main()
