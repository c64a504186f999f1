"""kiri-feedback (stage.py) and the verdict commands (`kiri alerts`, `kiri feedback`)."""
