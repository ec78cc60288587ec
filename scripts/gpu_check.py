"""Train `train=full` for at most 8 minutes, evaluate on the test split, print target tokens/s, BLEU and peak
memory (host RSS; on CUDA also the device's). On the GPU machine:

bash .ci/setup && python scripts/gpu_check.py

On a CPU, something small: python scripts/gpu_check.py train=smoke

The same as ``nmt gpu_check`` (``nmt gpu_check --help``: its options).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("gpu_check")
