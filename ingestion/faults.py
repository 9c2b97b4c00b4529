"""Named points where a test can stop a writer, to kill it between two commits.

``HARVEST_PAUSE_AT=curate:curated`` makes the process that reaches that point say so on
stderr (``paused at curate:curated``) and wait there, for at most ``PAUSE_LIMIT``
seconds, so that a test can send SIGKILL at exactly that point instead of racing a timer.
Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = "HARVEST_PAUSE_AT"
PAUSE_LIMIT = 120.0


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) != name:
        return
    print(f"paused at {name} (pid {os.getpid()})", file=sys.stderr, flush=True)
    time.sleep(PAUSE_LIMIT)  # bounded: a test that never kills only loses this long
