"""Train a random forest on scikit-learn's breast-cancer data set and evaluate it.

Writes metrics.json (summary metrics) and predictions.json (labels and scores
of every held-out row), which modelci compares between commits; and the model
(model.joblib) with a few input rows (input_example.json), which modelci
registers in MLflow and serves when the commit is delivered.
"""

import json
import os
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

params = json.loads(Path("params.json").read_text())

data = load_breast_cancer()
X, y = data.data, data.target
# A fixed split: head and base are evaluated on exactly the same rows.
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.4, random_state=42, stratify=y
)

# modelci gives every run a seed (0, then 1, 2, ... when it repeats a training to
# measure how much the metrics move with the seed alone): seed everything random from it.
seed = int(os.environ.get("MODELCI_SEED", "0"))
model = RandomForestClassifier(**params, random_state=seed, n_jobs=1)
model.fit(X_train, y_train)

scores = model.predict_proba(X_test)[:, 1]
predicted = (scores >= 0.5).astype(int)
metrics = {
    "accuracy": accuracy_score(y_test, predicted),
    "f1": f1_score(y_test, predicted),
    "roc_auc": roc_auc_score(y_test, scores),
    "log_loss": log_loss(y_test, np.clip(scores, 1e-6, 1 - 1e-6)),
}
Path("metrics.json").write_text(json.dumps(metrics, indent=2))
Path("predictions.json").write_text(
    json.dumps({"y_true": y_test.tolist(), "y_pred": predicted.tolist(), "scores": scores.tolist()})
)
joblib.dump(model, "model.joblib")
names = [str(n) for n in data.feature_names]
example = [dict(zip(names, map(float, row), strict=True)) for row in X_test[:3]]
Path("input_example.json").write_text(json.dumps(example, indent=1))
print(json.dumps(metrics))
