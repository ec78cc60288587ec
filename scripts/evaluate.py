"""Score translations with sacrebleu (BLEU, chrF, TER): a hypothesis file against references, or a model
directory's translation of a corpus split against the split's references.

The same as ``nmt evaluate`` (``nmt evaluate --help``: its config groups and defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("evaluate")
