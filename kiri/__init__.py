"""KIRI: a personal anomaly detector built from tiny GPTs composed as Unix pipes."""

__version__ = "0.1.0"
