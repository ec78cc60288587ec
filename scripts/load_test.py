"""Load-test a running `scripts/serve.py` on loopback: N concurrent clients, bounded in requests and time.

python scripts/load_test.py --url http://127.0.0.1:8000 --clients 1 8 32 --requests 400 --duration 20

The same as ``nmt load_test`` (``nmt load_test --help``: its options).
"""

from nmt.cli import run_command

if __name__ == "__main__":
    run_command("load_test")
