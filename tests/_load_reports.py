"""The load reports transformers logs (its MISSING / UNEXPECTED / MISMATCH tables), captured for assertions."""

import contextlib
import logging


@contextlib.contextmanager
def load_reports():
    """Yields a list that receives the text of each transformers load report logged inside the block."""
    reports = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "LOAD REPORT" in message:
                reports.append(message)

    # transformers' loggers do not propagate to the root logger (pytest's caplog): listen on the one that reports.
    logger = logging.getLogger("transformers.modeling_utils")
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        yield reports
    finally:
        logger.removeHandler(handler)
