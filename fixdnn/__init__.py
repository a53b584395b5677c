"""fixdnn: find why a deep-learning framework cannot use cuDNN / CUDA / oneDNN / MKL, and repair it."""

__version__ = "0.1.0"
