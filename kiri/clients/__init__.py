"""Clients of the servers KIRI talks to: HTTP itself, Telegram, Alertmanager, Prometheus."""
