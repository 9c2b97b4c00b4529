"""``harvest serve``: the API, the scheduler and the dashboard in one process.

Starting, it closes the runs a previous process left active (marked interrupted, their
leftover crawls killed), then resumes the schedules. On SIGTERM or SIGINT it stops the
scheduler, lets each running crawl finish its current batch (Scrapy stops gracefully on
SIGINT and the crawl stays resumable), waits for them within a bound, and exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from harvest.config import Config
from harvest.service.auth import api_token, host_name
from harvest.service.monitoring import DriftWatch
from harvest.service.notify import FailureNotice
from harvest.service.reload import RecipeWatch
from harvest.service.runner import Runner, kill_orphans
from harvest.service.runs import CLI, RunStore, store_path
from harvest.service.scheduler import SourceScheduler
from harvest.service.webhooks import Webhooks
from spiders.schedule import DEFAULT_TIME_LIMIT

log = logging.getLogger("harvest.service")


class Service:
    def __init__(
        self,
        config: Config,
        url: str = "",
        label_studio: bool = True,
        time_limit: float = DEFAULT_TIME_LIMIT,
        stop_grace: float = 30.0,
    ):
        self.config = config
        self.url = url
        folder = store_path(config).parent
        self.store = RunStore(store_path(config))
        self.token = api_token(folder)
        self.runner = Runner(config, self.store, time_limit, stop_grace)
        self.runner.on_end.append(FailureNotice(config, self.runner, url))
        self.scheduler = SourceScheduler(config, self.runner, folder / "jobs.db")
        self.recipes = RecipeWatch(config.sources, self.scheduler.sync)
        self.webhooks = Webhooks(config)
        self.drift = DriftWatch(config, self.runner, config.serve_monitor_every)
        self.label_studio = label_studio
        self._studio: Any = None

    def start(self) -> None:
        # a command-line crawl is not this service's to kill
        leftovers = [r for r in self.store.active() if r["trigger"] != CLI]
        killed = kill_orphans(leftovers)
        interrupted = self.store.interrupt_leftovers()
        if interrupted:
            log.warning(
                "runs %s were active when the last service stopped: now interrupted",
                interrupted,
                extra={"runs": interrupted, "killed_pids": killed},
            )
        self.scheduler.start()
        self.recipes.start()
        log.info("scheduler started", extra={"next_runs": self.scheduler.next_runs()})
        self.drift.start()
        if self.label_studio:
            threading.Thread(target=self._start_studio, name="label-studio", daemon=True).start()

    def stop(self) -> None:
        log.info("stopping: no new runs; active runs finish their current batch")
        self.recipes.stop()
        self.scheduler.shutdown()
        self.drift.stop()
        self.runner.stop()
        if self._studio is not None:
            self._studio.stop()
        log.info("stopped")

    def trigger(self, source: str) -> dict[str, Any]:
        return self.runner.trigger(source, "manual")

    def cancel(self, run_id: int, wait: float) -> bool:
        return self.runner.cancel(run_id, wait)

    def next_runs(self) -> dict[str, str | None]:
        if self.scheduler.aps.running:
            self.recipes.check()  # a cron changed since the last poll shows its own next run
        return self.scheduler.next_runs()

    def _start_studio(self) -> None:
        """Label Studio, unless one already answers at the configured address, and this
        service's webhook in each labelled source's project."""
        from harvest import stages
        from harvest.recipe import RecipeError
        from labeling.server import LabelStudioError
        from labeling.sync import SyncError

        server = stages.label_server(self.config)
        try:
            if not self.config.studio_managed or server.answers():
                log.info("using the Label Studio at %s", self.config.studio_url)
            else:
                log.info("starting Label Studio on %s", server.url)
                server.start()
                self._studio = server
            for line in self.webhooks.register(f"{self.url}/webhooks/label-studio"):
                log.info("webhook registered", extra=line)
        except (LabelStudioError, SyncError, RecipeError) as exc:
            log.warning("Label Studio: %s (webhooks and label steps wait for it)", exc)


def serve(
    config: Config,
    host: str = "127.0.0.1",
    port: int = 8600,
    label_studio: bool = True,
    time_limit: float = DEFAULT_TIME_LIMIT,
    stop_grace: float = 30.0,
) -> None:
    import uvicorn

    from harvest.service import logs
    from harvest.service.app import serving_app

    logs.setup()
    # what Label Studio's webhooks and the notices link to; behind a proxy, its address
    url = config.serve_public_url.rstrip("/") or f"http://{host_name(host)}:{port}"
    service = Service(config, url, label_studio, time_limit, stop_grace)
    server = uvicorn.Server(
        uvicorn.Config(
            serving_app(service),
            host=host,
            port=port,
            log_config=None,
            access_log=False,  # written by harvest.service.logs.AccessLog
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    # uvicorn handles the signal, shuts down (the service with it), then raises the signal
    # again with these handlers back in place: a requested stop is a clean exit
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    log.info(
        "serving on %s (API token: $HARVEST_API_TOKEN or %s)",
        url,
        store_path(config).parent / ".api_token",
    )
    server.run()
    if not server.started:
        sys.exit(1)
