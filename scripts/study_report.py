"""Tabulate a Hydra multirun study: ``study.csv`` and a BLEU-against-time plot (and ``decoding.csv``).

The same as ``nmt study_report`` (``nmt study_report --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("study_report")
