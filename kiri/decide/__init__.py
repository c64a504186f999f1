"""kiri-decide (stage.py) and its policy."""
