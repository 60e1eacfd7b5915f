class PsxError(Exception):
    """An error the user can fix (bad config, missing data, unavailable device).

    The CLI prints these as one line, without a traceback, and exits non-zero.
    """


class StopRequested(Exception):
    """A run was stopped by a signal (args[0]: its name) after it checkpointed its state.

    An ordinary exception, not a KeyboardInterrupt: a launcher that runs the job in another
    process (submitit on SLURM, joblib) gets it back as the job's result, and the CLI, which
    receives it through Hydra, exits with 128 + the signal's number."""


class SweepStopped(KeyboardInterrupt):
    """StopRequested in a job that the launching process runs itself (Hydra's basic launcher):
    raised as a KeyboardInterrupt so that the launcher starts no further job of the sweep."""
