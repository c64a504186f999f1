"""kiri-supervise (supervisor.py): pipeline files, the pipes it relays, the lifeline, `kiri
status`, and the launchd and systemd services."""
