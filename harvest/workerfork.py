"""Crawl workers forked from the command's own process, with what a crawl imports loaded.

Started as fresh interpreters, ``harvest crawl --workers N``'s workers each imported
Scrapy, the lake and the recipe's components: over a CPU second a worker, paid N times on
the cores the crawl then needs, and the first worker crawled alone while the others were
still importing. Forked, they share one import and start together.

The children are forked before the command opens the lake, its run history or the
source's lock: the lake's Rust runtime refuses to run in a process forked after it
started, and a child must not inherit a lock or a connection it does not own. Each child
then waits on a pipe for its orders (a command line, the environment to add, files for
its output), and exits at once if the pipe closes without any.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from harvest.config import Config
from spiders.recipe import Recipe

# settings that name one class a crawl loads by its dotted path
COMPONENTS = (
    "SCHEDULER",
    "SCHEDULER_PRIORITY_QUEUE",
    "SCHEDULER_MEMORY_QUEUE",
    "SCHEDULER_DISK_QUEUE",
    "DUPEFILTER_CLASS",
    "STATS_CLASS",
    "LOG_FORMATTER",
    "REQUEST_FINGERPRINTER_CLASS",
    "DOWNLOADER",
)
# settings whose keys name classes, and the download handlers, whose values do
COMPONENT_DICTS = (
    "SPIDER_MIDDLEWARES",
    "DOWNLOADER_MIDDLEWARES",
    "EXTENSIONS",
    "ITEM_PIPELINES",
)
HANDLER_DICTS = ("DOWNLOAD_HANDLERS", "DOWNLOAD_HANDLERS_BASE")
REAP_GRACE = 5.0  # seconds a child never started gets to see its pipe close and exit
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def preload(config: Config, recipe: Recipe) -> bool:
    """Imports what a worker's crawl of ``recipe`` loads by name. False where an import
    installed Twisted's reactor: each child must install its own."""
    from scrapy.utils.misc import load_object

    from harvest.crawl import Worker, crawl_settings, worker_settings

    settings = worker_settings(crawl_settings(config, recipe, "preload"), Worker("", "", False))
    paths = [settings.get(name) for name in COMPONENTS]
    for name in COMPONENT_DICTS:
        for suffix in ("", "_BASE"):
            paths += [k for k, v in settings.getdict(name + suffix).items() if v is not None]
    for name in HANDLER_DICTS:
        paths += list(settings.getdict(name).values())
    for path in paths:
        if isinstance(path, str):
            try:
                load_object(path)
            except Exception:  # noqa: BLE001 - the worker's crawl names it in its own words
                continue
    return "twisted.internet.reactor" not in sys.modules


class ForkedWorker:
    """A forked child waiting for its orders; once started, it answers as much of
    ``subprocess.Popen`` as the workers' supervisor uses."""

    def __init__(self, pid: int, orders: int) -> None:
        self.pid = pid
        self.orders: int | None = orders  # the pipe's end we write to
        self.returncode: int | None = None

    def start(self, argv: list[str], env: dict[str, str], out: Path, err: Path) -> None:
        """Runs ``harvest ARGV`` in the child, ``env`` added to its environment."""
        assert self.orders is not None, "a forked worker starts once"
        data = json.dumps({"argv": argv, "env": env, "out": str(out), "err": str(err)})
        # a child gone already says how it ended through poll()
        with suppress(BrokenPipeError), os.fdopen(self.orders, "wb") as pipe:
            pipe.write(data.encode())
        self.orders = None

    def dismiss(self) -> None:
        """Closes the pipe of a child never started, which ends it."""
        if self.orders is not None:
            os.close(self.orders)
            self.orders = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def can_fork() -> bool:
    """Forking is safe only where no other Python thread could hold a lock the child
    would inherit held."""
    return hasattr(os, "fork") and threading.active_count() == 1


@contextmanager
def forked_workers(count: int, config: Config, recipe: Recipe) -> Iterator[list[ForkedWorker]]:
    """``count`` children forked now, after ``preload``; none where forking is not safe
    (the caller then starts fresh interpreters). Children never started are ended on
    leaving; the started ones are the caller's to wait for."""
    # and again after the imports, which may have started a thread of their own
    if count < 1 or not can_fork() or not preload(config, recipe) or not can_fork():
        yield []
        return
    sys.stdout.flush()
    sys.stderr.flush()
    children: list[ForkedWorker] = []
    parent = os.getpid()
    try:
        for _ in range(count):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(write)
                for sibling in children:  # or a sibling's pipe would never close
                    if sibling.orders is not None:
                        os.close(sibling.orders)
                _child(read, parent)
            os.close(read)
            children.append(ForkedWorker(pid, write))
        yield children
    finally:
        for child in children:
            if child.orders is not None:
                child.dismiss()
                try:
                    child.wait(REAP_GRACE)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def _child(orders: int, parent: int) -> NoReturn:
    """A forked child's whole life: it never returns into its parent's code."""
    code = 1
    try:
        with os.fdopen(orders, "rb") as pipe:
            data = pipe.read()
        code = _run(json.loads(data), parent) if data else 0  # no orders: dismissed
    except KeyboardInterrupt:
        code = 130  # Ctrl-C before it had its own process group
    except BaseException:  # noqa: BLE001 - whatever it is, the child must end here
        traceback.print_exc()
    finally:
        logging.shutdown()  # what atexit would have flushed, which os._exit skips
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _run(orders: dict[str, Any], parent: int) -> int:
    os.setpgid(0, 0)  # a terminal's signals reach it through its parent alone (workers.py)
    _end_with(parent)
    os.environ.update(orders["env"])
    for fd, path in ((1, orders["out"]), (2, orders["err"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    from harvest.cli import app

    try:
        app(args=orders["argv"], prog_name="harvest")
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    return 0


def _end_with(parent: int) -> None:
    """A worker whose command was killed would crawl on, out of its own process group and
    unseen: Linux sends it the SIGTERM the command would have passed on."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # gone before the request took hold
        os.kill(os.getpid(), signal.SIGTERM)
