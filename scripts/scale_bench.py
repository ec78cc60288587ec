"""Time and peak memory of each data-preparation stage on a large corpus, the sampler's first epoch and the
start of training: prints a table and writes JSON.

python scripts/scale_bench.py pairs=1000000 work_dir=runs/scale-1m train_updates=3
python scripts/scale_bench.py config.data.text.train=corpora/big/train config.data.text.dev=corpora/big/dev

Run the same command twice: the second run reports the caches it reused. The same as ``nmt scale``
(``nmt scale --help``: its defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("scale")
