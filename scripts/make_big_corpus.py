"""Write a large parallel corpus (Moses pair or TSV, optionally gzipped) from the Bible db's aligned versions.

python scripts/make_big_corpus.py pairs=10000000 output=corpora/big/train
python scripts/make_big_corpus.py pairs=100000 format=tsv gzip=true keys=true src_lang=de tgt_lang=es

The same as ``nmt big_corpus`` (``nmt big_corpus --help``: its defaults).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("big_corpus")
