"""Tools that measure and exercise the toolkit from outside, through its public API: speed and MFU
(``benchmark``), a kill-anywhere resume drill (``fault_drill``, on the toy corpus of ``toy_corpus``), a multirun
study's table (``study``), a load test of a running server (``load_test``), a large parallel corpus from the
Bible's versions (``big_corpus``), the time and memory of each preparation stage on it (``scale``) and the
one-command GPU figure: train ``train=full`` for 8 minutes, score test, print speed and memory (``gpu_check``). Each is an
``nmt`` command (``nmt benchmark``, ...) and a script in ``scripts/``.
"""
