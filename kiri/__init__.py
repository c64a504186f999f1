"""KIRI: a personal anomaly detector built from tiny GPTs composed as Unix pipes."""

import os

# Stages are single-threaded processes that run side by side in a pipeline, and the model's
# matrices are small: BLAS worker threads only burn CPU and memory here. Set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

__version__ = "0.1.0"
