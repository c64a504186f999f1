"""kiri-collect (stage.py) and its sources, one module each."""
