"""User-facing errors: entry scripts print these as one line and exit non-zero (no traceback)."""


class MsrsError(Exception):
    """A bad input the user can fix (missing file, bad flag, corrupt checkpoint, ...).

    The message is one line and says what to do.
    """
