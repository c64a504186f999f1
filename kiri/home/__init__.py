"""KIRI_HOME and what lives in it: config.toml, the SQLite store, the recordings, the task log."""
