"""kiri-atom (stage.py), and `kiri train`, `kiri score` and `kiri info` (commands.py)."""
