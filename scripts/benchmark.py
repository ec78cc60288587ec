"""Training and decoding speed, peak memory and MFU on this machine: prints a table and writes JSON.

The same as ``nmt benchmark`` (``nmt benchmark --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("benchmark")
