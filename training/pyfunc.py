"""A trained model as an MLflow pyfunc model, so that MLflow itself can load and serve it.

``save`` writes the MLflow model folder: ``MLmodel`` (the pyfunc flavour, pointing at this
module as its loader), the weights as its data (``data/model.pt``), the signature (one
string column in; ``label`` and ``prob_<class>`` out) and an input example. The folder is
logged as a run's ``model/`` artifacts, where the registry points, so

    mlflow.pyfunc.load_model("models:/harvest-demo@champion").predict(["some text"])

works in any process that has harvest installed: ``predict`` takes a DataFrame with a
``text`` column, a Series or a list of texts. A version registered before models were
saved this way holds only ``model.pt``; ``load`` reads those too.

``write`` is the same for any model that gives class probabilities: the labelling model
(``labeling.pyfunc``) is saved through it with its own loader module, and ``load`` reads
whichever loader a folder's ``MLmodel`` names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ingestion.errors import InvalidInputError
from training.arrays import Floats
from training.model import TextClassifier, load_model

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from training.tracking import Store

MODEL_FILE = "model.pt"
TEXT = "text"
PROB = "prob_"  # + a class name: that class's probability
EXAMPLE = ["A local council approved the new budget on Tuesday."]


class Scorer:
    """What ``mlflow.pyfunc.load_model`` wraps: the classes a model predicts and a function
    from texts to their (rows, classes) probabilities; ``threads``, the CPU threads the
    service scores its batches on (None: torch's own choice)."""

    def __init__(
        self,
        classes: Sequence[str],
        proba: Callable[[list[str]], Floats],
        threads: int | None = None,
    ):
        self.classes = list(classes)
        self.proba = proba
        self.threads = threads

    def labels(self, probs: Floats) -> list[str]:
        """The most probable class of each row of (texts, classes) probabilities."""
        return [self.classes[k] for k in probs.argmax(1).tolist()]

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per text: ``label``, then ``prob_<class>`` for every class."""
        texts = texts_of(model_input)
        probs = self.proba(texts) if texts else np.zeros((0, len(self.classes)))
        out = pd.DataFrame({"label": self.labels(probs)}, dtype=str)
        for j, name in enumerate(self.classes):
            out[PROB + name] = probs[:, j].astype(np.float64)
        return out


def torch_scorer(model: TextClassifier) -> Scorer:
    from training.trainer import predict

    model = model.eval()
    return Scorer(model.classes, lambda texts: predict(model, texts), model.threads)


def texts_of(model_input: Any) -> list[str]:
    """The texts of a DataFrame (its ``text`` column, or its only column), a Series, a
    list of strings or one string."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT in model_input.columns:
            column = model_input[TEXT]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise InvalidInputError(
                f"a DataFrame to score needs a {TEXT!r} column; it has "
                f"{', '.join(map(str, model_input.columns))}"
            )
        values: Sequence[Any] = column.tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise InvalidInputError(f"text {bad[0]} is {type(values[bad[0]]).__name__}, not a string")
    return list(values)


def _load_pyfunc(path: str, device: str = "cpu") -> Scorer:
    """MLflow's entry point: ``path`` is the model's data, ``model.pt``."""
    return torch_scorer(load_model(path, device))


def load(folder: Path, device: str = "cpu") -> Scorer:
    """The model in a registered version's folder: the MLflow model through the loader
    its ``MLmodel`` names, or only ``model.pt`` for a version registered before models
    were saved as MLflow models."""
    import yaml

    mlmodel = folder / "MLmodel"
    if mlmodel.is_file():
        flavor = (yaml.safe_load(mlmodel.read_text()).get("flavors") or {}).get(
            "python_function"
        ) or {}
        module, data = flavor.get("loader_module"), flavor.get("data")
        if module and data and str(module).split(".")[0] in ("training", "labeling"):
            loader: Callable[[str, str], Scorer] = importlib.import_module(module)._load_pyfunc
            return loader(str(folder / data), device)
    if (folder / MODEL_FILE).is_file():
        return _load_pyfunc(str(folder / MODEL_FILE), device)
    raise InvalidInputError(
        f"{folder} holds no model harvest can score with (no MLmodel of harvest's, no "
        f"{MODEL_FILE}): it is not a model harvest registered"
    )


def load_version(store: Store, mv: ModelVersion, device: str = "cpu") -> Scorer:
    """The scorer of registered version ``mv``, read from a local copy of its artifacts."""
    from training import registry

    folder, tmp = registry.local_copy(store, mv)
    try:
        return load(folder, device)
    finally:
        if tmp is not None:
            tmp.cleanup()


def save(weights: Path, folder: Path) -> None:
    """Writes the MLflow model folder for the model saved at ``weights``."""
    scorer = _load_pyfunc(str(weights))
    write(folder, weights, __name__, scorer.classes, ["torch", "numpy", "pandas"])


def write(
    folder: Path, data: Path, loader_module: str, classes: Sequence[str], needs: list[str]
) -> None:
    """Writes an MLflow model folder whose ``data`` (a file or folder) ``loader_module``'s
    ``_load_pyfunc`` turns into a Scorer of ``classes``; ``needs``: the packages loading
    takes beside harvest itself, since nothing is inferred by importing it."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import TensorSpec

    outputs: list[ColSpec | TensorSpec] = [ColSpec(DataType.string, "label")]
    outputs += [ColSpec(DataType.double, PROB + c) for c in classes]
    mlflow.pyfunc.save_model(
        path=str(folder),
        loader_module=loader_module,
        data_path=str(data),
        # one unnamed string column: MLflow then takes a list of texts as readily as a
        # DataFrame, which a named column would refuse
        signature=ModelSignature(Schema([ColSpec(DataType.string)]), Schema(outputs)),
        input_example=pd.DataFrame({TEXT: EXAMPLE}),
        pip_requirements=[*needs, "mlflow-skinny"],
    )
