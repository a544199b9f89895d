"""Write scikit-learn's wine data (UCI wine cultivars) as wine_train.csv (140 rows) and wine_test.csv (38 rows).

The CSV files the README and docs/cli.md train on: ``python examples/make_wine_csv.py [FOLDER]``
(needs scikit-learn). A header row, the 13 features, then the ``cultivar`` label as text.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine


def main(folder: str = ".") -> None:
    """Write the two files into ``folder``."""
    d = load_wine()
    order = np.random.default_rng(0).permutation(len(d.target))
    for name, rows in (("wine_train.csv", order[:140]), ("wine_test.csv", order[140:])):
        with open(Path(folder) / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*d.feature_names, "cultivar"])
            w.writerows([*d.data[i], d.target_names[d.target[i]]] for i in rows)


if __name__ == "__main__":
    main(*sys.argv[1:])
