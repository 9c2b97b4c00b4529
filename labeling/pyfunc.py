"""The labelling model as an MLflow pyfunc model, registered as ``labeling-<source>``.

Its data is the folder ``LabelModel.save`` writes (``data/model/model.joblib`` and its
``model.json``), so ``labeling.model.load`` reads a registered version as it reads the
model folder, and ``mlflow.pyfunc.load_model("models:/labeling-demo@champion")`` gives
the same ``label`` and ``prob_<class>`` columns as a model ``harvest train`` registers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from labeling.model import LabelModel, ModelError, load
from training import pyfunc

DATA = "model"  # the saved model's folder inside the MLflow model's data/


def save(model: LabelModel, folder: Path) -> None:
    """Writes the MLflow model folder of ``model`` into ``folder`` (new or empty)."""
    with tempfile.TemporaryDirectory(prefix="harvest-labeling-") as tmp:
        data = Path(tmp) / DATA
        model.save(data)
        pyfunc.write(folder, data, __name__, model.classes, ["scikit-learn", "numpy", "pandas"])


def _load_pyfunc(path: str, device: str = "cpu") -> pyfunc.Scorer:
    """MLflow's entry point: ``path`` is the saved model's folder."""
    model = load(path)
    if model is None:
        raise ModelError(f"{path} holds no labelling model")
    return pyfunc.Scorer(model.classes, model.predict_proba)
