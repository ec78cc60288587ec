"""Kill-anywhere drill: SIGKILL a training run N times, resume it each time, and check that nothing was lost.

python scripts/fault_drill.py              # 20 kills of the smoke config on a generated toy corpus
python scripts/fault_drill.py kills=3 work_dir=/tmp/drill

The same as ``nmt fault_drill`` (``nmt fault_drill --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("fault_drill")
