"""Train a small MLP on scikit-learn's 8x8 digits with the default backend and print the result."""

from __future__ import annotations

import argparse
import time

import numpy as np

import gpumlp as gm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="auto", help="auto (default), numpy or cupy")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X, y = gm.load_dataset("digits")
    X_train, X_test, y_train, y_test = gm.train_test_split(X, y, test_size=0.25, seed=args.seed, stratify=True)
    model = gm.MLP(
        [64, 128, 10], hidden_activation="relu", output_activation="softmax", backend=args.backend, seed=args.seed
    )
    t0 = time.perf_counter()
    history = model.fit(
        X_train,
        y_train,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        epochs=args.epochs,
        batch_size=32,
        validation_data=(X_test, y_test),
    )
    seconds = time.perf_counter() - t0
    accuracy = float(np.mean(model.predict(X_test).argmax(axis=1) == y_test))
    info = gm.backend_info(model.backend)
    print(f"backend        {info['backend']} ({info['device']})")
    print(f"data           digits: {len(X_train)} train / {len(X_test)} test samples, 64 features, 10 classes")
    print(f"model          {model}")
    print(f"epochs         {len(history['loss'])}")
    print(f"final loss     train {history['loss'][-1]:.4f}, test {history['val_loss'][-1]:.4f}")
    print(f"test accuracy  {accuracy:.4f}")
    print(f"time           {seconds:.2f} s ({len(X_train) * len(history['loss']) / seconds:,.0f} samples/s)")


if __name__ == "__main__":
    main()
