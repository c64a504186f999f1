"""kiri-act (stage.py) and its sinks."""
