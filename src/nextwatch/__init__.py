"""nextwatch: real-time "what to watch next" recommendations.

Spark trains next-title models in batch from the event log; the Flask API records watches,
predicts the next title at once and serves it from a Redis cache.
"""

import os

# One BLAS thread per process, set before NumPy is first imported. Scoring a request is one small
# matrix product (the sequence model's titles x width); a multi-threaded BLAS wakes threads that
# then fight the other workers, Spark and PyTorch for two cores: measured here, 0.3 ms became
# 7 ms. PyTorch sets its own thread count (training/sequence_training.py). A variable already
# set wins.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
# PyTorch trains on every core (training/sequence_training.py) with OpenMP, whose threads by
# default spin at each barrier waiting for the others: when another process holds a core, the
# spinning thread takes the time the working one needs. Measured on the 2 shared cores here (one
# epoch of Amazon Beauty's batches, load 4): 2 spinning threads were 2.1-2.6x slower than 1
# thread, 2 passive ones as fast. Read when PyTorch loads its OpenMP, so set before any import
# of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
