"""Pure torch math of PRR: Fourier aggregation, DET stage logic, CPA loss, prototypes, metrics.

Nothing in this package imports ``fedml`` or touches files; every function is side-effect free
and does not mutate its inputs.
"""
