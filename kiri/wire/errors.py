"""KIRI's one error model: an error a person can act on, with the exit status it ends a command
with, and the status that tells the supervisor not to restart a stage."""

from __future__ import annotations


class KiriError(Exception):
    """A failure the user can act on: printed as one `Error: …` line by the stage runner
    (kiri.home.runner) and the `kiri` dispatcher, exit status `status`: 1, or 2 for a usage
    error (such as a config.toml that does not decode). The store, weights, pipeline and config
    errors are all KiriErrors."""

    status = 1


# s6's exit status for "do not restart me": a source with nothing to watch, or a finite one done
DO_NOT_RESTART = 125
