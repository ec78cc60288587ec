"""Each command under each thread count and OpenMP wait policy, alone and beside busy neighbours: a table of
medians and a JSON file of every run.

The same as ``nmt thread_study`` (``nmt thread_study --help``: its defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("thread_study")
