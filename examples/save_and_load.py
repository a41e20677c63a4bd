"""Save a fitted classifier and load it again, with joblib and with the weights-only format.

* ``joblib.dump`` / ``joblib.load`` store any estimator; loading runs code chosen by whoever
  wrote the file, so load only files you trust.
* ``skvqgnn.persistence.save`` / ``load`` store the estimator as tensors and plain values, read
  back with ``torch.load(weights_only=True)``.

Neither stores the graph: the loaded model is given the training graph again, recognises it by
content and predicts exactly as before.
"""

import tempfile
from pathlib import Path

import joblib
import numpy as np

from skvqgnn import VQGNNClassifier
from skvqgnn.datasets import load_cora
from skvqgnn.persistence import load, save


def main() -> None:
    A, X, y, split = load_cora()
    clf = VQGNNClassifier(n_codewords=64, max_epochs=20, learning_rate=0.01, random_state=0)
    clf.fit(A, X, np.where(split.train_mask, y, -1))
    probabilities = clf.predict_proba(A, X)

    with tempfile.TemporaryDirectory() as folder:
        for name, write, read in [
            ("joblib", joblib.dump, joblib.load),
            ("weights-only", save, load),
        ]:
            path = Path(folder) / f"clf.{name}"
            write(clf, path)
            restored = read(path)
            same = np.array_equal(restored.predict_proba(A, X), probabilities)
            test_accuracy = np.mean(restored.predict(A, X)[split.test_mask] == y[split.test_mask])
            print(
                f"{name:>12}: {path.stat().st_size / 1024:.0f} KiB, identical probabilities: "
                f"{same}, test accuracy {test_accuracy:.3f}"
            )
            assert same


if __name__ == "__main__":
    main()
