"""One module per executable stage; each runs as `python -m kiri.stages.NAME`."""
