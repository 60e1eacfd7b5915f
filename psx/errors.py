class PsxError(Exception):
    """An error the user can fix (bad config, missing data, unavailable device).

    The CLI prints these as one line, without a traceback, and exits non-zero.
    """
