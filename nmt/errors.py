"""The one exception type for errors a user can cause and fix (paths, corpora, configs, checkpoints)."""


class NmtError(Exception):
    """A user-facing error: the message says what went wrong and what to do about it.

    Scripts print it without a traceback; set ``HYDRA_FULL_ERROR=1`` or ``NMT_DEBUG=1`` to see one.
    """
