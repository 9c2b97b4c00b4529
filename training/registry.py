"""The MLflow model registry as harvest uses it.

One registered model a dataset (``harvest-<dataset>``) and one a labelling source
(``labeling-<source>``); each version points at the model artifacts of the run that made
it. Aliases say which version serves: every new version takes ``challenger``, and
``promote`` moves ``champion`` (or any alias) to a version. A version promoted to champion
stops being the challenger.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ingestion.errors import NotFoundError
from training.tracking import Store, TrackingError, first_line, safe_uri

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(NotFoundError, TrackingError):
    pass


def model_name(dataset: str) -> str:
    return f"harvest-{dataset}"


def labeling_name(source: str) -> str:
    return f"labeling-{source}"


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def registered(store: Store, name: str) -> RegisteredModel:
    """Registered model ``name``; unknown, a RegistryError naming the known ones."""
    from mlflow.exceptions import MlflowException

    if not store.exists():  # a question must not create an empty store
        raise RegistryError(
            f"no registered model {name!r}: there is no MLflow store at {safe_uri(store.uri)} "
            "yet (train a model first)"
        )
    try:
        return store.client.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise RegistryError(f"{name}: {first_line(exc)}") from exc
    known = sorted(m.name for m in store.client.search_registered_models())
    raise RegistryError(
        f"no registered model {name!r} in {safe_uri(store.uri)} "
        f"(registered: {', '.join(known) or 'none'})"
    )


def versions(store: Store, name: str) -> list[ModelVersion]:
    """Every version of ``name``, oldest first."""
    quoted = name.replace("'", "\\'")
    found = store.client.search_model_versions(f"name = '{quoted}'")
    return sorted(found, key=lambda v: int(v.version))


def version(store: Store, name: str, number: int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    registered(store, name)
    try:
        return store.client.get_model_version(name, str(number))
    except MlflowException as exc:
        if not _missing(exc):
            raise RegistryError(f"{name} version {number}: {first_line(exc)}") from exc
    known = ", ".join(str(v.version) for v in versions(store, name)) or "none"
    raise RegistryError(f"model {name!r} has no version {number} (versions: {known})")


def by_alias(store: Store, name: str, alias: str) -> ModelVersion:
    aliases = registered(store, name).aliases
    if alias not in aliases:
        held = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        raise RegistryError(f"no version of {name!r} has the alias {alias!r} (aliases: {held})")
    return store.client.get_model_version(name, str(aliases[alias]))


def find(store: Store, name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """The version of ``name`` holding ``alias``, or None when there is none."""
    try:
        return by_alias(store, name, alias)
    except RegistryError:
        return None


def register(
    store: Store, name: str, run_id: str, source: str, tags: Mapping[str, object]
) -> ModelVersion:
    """A new version of ``name`` (created on first use) pointing at ``source``, the run's
    model artifacts; it takes the ``challenger`` alias."""
    from mlflow.exceptions import MlflowException

    client = store.client
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _missing(exc):
            raise
        client.create_registered_model(name)
    made = client.create_model_version(
        name, source, run_id, tags={k: str(v) for k, v in tags.items() if v is not None}
    )
    client.set_registered_model_alias(name, CHALLENGER, made.version)
    return client.get_model_version(name, made.version)


def promote(store: Store, name: str, number: int, alias: str = CHAMPION) -> dict[str, Any]:
    """Gives ``alias`` to version ``number`` of ``name``, taking it from the version that
    held it; a version made champion stops being the challenger."""
    from mlflow.exceptions import MlflowException

    before = dict(registered(store, name).aliases)
    target = version(store, name, number)
    try:
        store.client.set_registered_model_alias(name, alias, str(target.version))
    except MlflowException as exc:  # a reserved alias such as "latest" or "v3"
        raise RegistryError(f"cannot give {name!r} the alias {alias!r}: {first_line(exc)}") from exc
    # MLflow gives version numbers as strings in some answers and numbers in others
    if alias == CHAMPION and str(before.get(CHALLENGER)) == str(target.version):
        store.client.delete_registered_model_alias(name, CHALLENGER)
    previous = before.get(alias)
    return {
        "model": name,
        "alias": alias,
        "version": int(target.version),
        "previous": int(previous) if previous is not None else None,
        "aliases": {a: int(v) for a, v in sorted(registered(store, name).aliases.items())},
    }


def describe(
    store: Store, mv: ModelVersion, metrics: bool = True, aliases: list[str] | None = None
) -> dict[str, Any]:
    """One version: its aliases, run, dataset version and, with ``metrics``, its run's
    metrics (the last value of each) and parameters."""
    tags = dict(mv.tags or {})
    if "harvest.dataset" in tags:
        dataset, cut = tags["harvest.dataset"], tags.get("harvest.dataset_version")
    elif "harvest.source" in tags:  # a labelling model: its dataset is the labels table
        dataset, cut = f"labels/{tags['harvest.source']}", tags.get("harvest.labels_version")
    else:
        dataset, cut = None, None
    out: dict[str, Any] = {
        "model": mv.name,
        "version": int(mv.version),
        "aliases": sorted(mv.aliases or [] if aliases is None else aliases),
        "run_id": mv.run_id,
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
        "source": mv.source,
        "dataset": dataset,
        "dataset_version": _number(cut),
        "tags": tags,
    }
    if metrics and mv.run_id:
        data = store.client.get_run(mv.run_id).data
        out["metrics"] = dict(sorted(data.metrics.items()))
        out["params"] = dict(sorted(data.params.items()))
        lineage = data.tags.get("harvest.lineage")
        out["lineage"] = json.loads(lineage) if lineage else None
    return out


def _number(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def show(
    store: Store, name: str, number: int | None = None, alias: str = CHAMPION
) -> dict[str, Any]:
    """Version ``number`` of ``name``, or the one holding ``alias``."""
    mv = version(store, name, number) if number is not None else by_alias(store, name, alias)
    return describe(store, mv)


def list_models(store: Store) -> list[dict[str, Any]]:
    """Every registered model with its aliases and versions."""
    out = []
    for model in sorted(store.client.search_registered_models(), key=lambda m: m.name):
        out.append(
            {
                "model": model.name,
                "aliases": {a: int(v) for a, v in sorted(model.aliases.items())},
                # a search leaves each version's aliases out: the model has them
                "versions": [
                    describe(
                        store,
                        mv,
                        False,
                        [a for a, v in model.aliases.items() if str(v) == str(mv.version)],
                    )
                    for mv in versions(store, model.name)
                ],
            }
        )
    return out


def local_copy(
    store: Store, mv: ModelVersion
) -> tuple[Path, tempfile.TemporaryDirectory[str] | None]:
    """A local folder holding the artifacts of ``mv``: the folder itself for a local store,
    else a download into a temporary folder the caller cleans up (the second value)."""
    parts = urlsplit(mv.source)
    if parts.scheme in ("", "file"):
        path = Path(unquote(parts.path))
        if path.is_dir():
            return path, None
    import mlflow.artifacts

    tmp = tempfile.TemporaryDirectory(prefix="harvest-model-")
    try:
        got = mlflow.artifacts.download_artifacts(
            artifact_uri=mv.source, dst_path=tmp.name, tracking_uri=store.uri
        )
    except Exception as exc:
        tmp.cleanup()
        raise RegistryError(
            f"cannot fetch {mv.name} version {mv.version} from {mv.source}: {first_line(exc)}"
        ) from exc
    return Path(got), tmp
