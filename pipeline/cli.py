"""The entry point every stage's command line goes through: expected failures print one line.

Bad input, a failed download, an unavailable model: the message says what and where, without a
stack trace. PIPELINE_DEBUG=1 shows the trace anyway. Anything else is a bug and keeps its trace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class ModelUnavailable(RuntimeError):
    """A model could not be loaded (offline, wrong name, incomplete directory)."""


def run_stage(main: Callable[[], None]) -> None:
    from pipeline.download import DownloadError

    try:
        main()
    except (ValueError, FileNotFoundError, DownloadError, ModelUnavailable) as err:
        if os.environ.get("PIPELINE_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
