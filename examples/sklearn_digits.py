"""gpumlp's MLPClassifier beside scikit-learn's on digits, in the same pipeline and grid search.

``python examples/sklearn_digits.py`` prints both test accuracies; the README quotes its output
(the same code as the README's estimator example, run once with each estimator). Needs scikit-learn.
"""

from __future__ import annotations

from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import gpumlp as gm
from gpumlp.sklearn import MLPClassifier


def test_accuracy(clf: object, X_train, X_test, y_train, y_test) -> float:
    """Test accuracy of the grid search's best Pipeline(StandardScaler, clf), alpha chosen by 3-fold CV."""
    search = GridSearchCV(make_pipeline(StandardScaler(), clf), {"mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    search.fit(X_train, y_train)
    return float(search.score(X_test, y_test))


def main() -> None:
    """Print the two test accuracies."""
    X, y = gm.load_dataset("digits")
    split = gm.train_test_split(X, y, test_size=0.25, seed=0)
    settings = dict(hidden_layer_sizes=(128,), solver="adam", max_iter=200, early_stopping=True, random_state=0)
    ours = test_accuracy(MLPClassifier(**settings, backend="numpy"), *split)
    theirs = test_accuracy(SkMLPClassifier(**settings), *split)
    print(f"digits test accuracy: gpumlp {ours:.4f}, scikit-learn {theirs:.4f}")


if __name__ == "__main__":
    main()
