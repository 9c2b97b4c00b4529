"""The service's drift watch: every ``serve.monitor_every`` seconds, ``harvest.monitor.check``
on each model with logged predictions, under its recipe's ``monitor:`` thresholds. When a
window drifts and the recipe's schedule says ``retrain: on_drift``, a run that pushes the
drifted inputs for labelling and retrains the model is queued, once as the model turns
drifted (a source already running is left to finish)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from harvest.config import Config

if TYPE_CHECKING:
    from harvest.monitor import Window
    from harvest.service.runner import Runner

log = logging.getLogger(__name__)


class DriftWatch:
    def __init__(self, config: Config, runner: Runner, every: float):
        self.config, self.runner, self.every = config, runner, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.config.serve_log_text:
            from harvest.drifted import LOG_TEXT
            from harvest.recipe import RecipeError, list_recipes, load_recipe
            from labeling.section import ON_DRIFT

            for path in list_recipes(self.config.sources):
                try:
                    recipe = load_recipe(path)
                except RecipeError:  # the scheduler says what is wrong with it
                    continue
                if recipe.schedule is not None and recipe.schedule.retrain == ON_DRIFT:
                    log.warning(
                        "%s retrains on drift, but the inputs to label are logged without "
                        "their text: set %s",
                        recipe.name,
                        LOG_TEXT,
                    )
        if self.every > 0:
            self._thread = threading.Thread(target=self._run, name="drift-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.once()

    def once(self) -> dict[str, list[Window]]:
        """Checks every model with logged predictions; the windows each gained."""
        from harvest.monitor import monitored
        from ingestion.lake import Lake

        found: dict[str, list[Window]] = {}
        for model in monitored(Lake(self.config.lake)):
            if self._stop.is_set():
                break
            try:
                found[model] = self._check(model)
            except Exception as exc:  # one model's failure never stops the others
                log.warning("drift check of %s: %s", model, exc)
        return found

    def _check(self, model: str) -> list[Window]:
        from harvest import stages
        from harvest.monitor import check, recipe_for, status
        from harvest.service.runner import DRIFT
        from ingestion.errors import HarvestError
        from ingestion.lake import Lake
        from labeling.section import ON_DRIFT

        recipe = recipe_for(self.config, model)
        before = status(Lake(self.config.lake), model)
        windows = check(
            self.config,
            stages.tracking_store(self.config),
            model,
            recipe.monitor if recipe else None,
            self._stop,
        )
        drifted = [w for w in windows if w.drifted]
        for w in drifted:
            log.warning(
                "%s drifted: %s in %d predictions to %s",
                model,
                ", ".join(w.drifted),
                w.rows,
                w.end.isoformat(),
                extra={"model": model, "drifted": w.drifted, "window_end": w.end.isoformat()},
            )
        schedule = recipe.schedule if recipe else None
        # once as the model turns drifted, not again for every window while it stays so
        turned = drifted and not (before and before["drifted"])
        if turned and schedule is not None and schedule.retrain == ON_DRIFT:
            assert recipe is not None
            try:
                run = self.runner.trigger(recipe.name, DRIFT)
                log.info("queued run %s of %s: %s drifted", run["id"], recipe.name, model)
            except HarvestError as exc:  # busy: the run in progress labels and trains too
                log.info("no drift run of %s now: %s", recipe.name, exc)
        return windows
