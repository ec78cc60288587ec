"""Load-test a running `scripts/serve.py` on loopback: N concurrent clients, bounded in requests and time.

python scripts/load_test.py --url http://127.0.0.1:8000 --clients 1 8 32 --requests 400 --duration 20
"""

import argparse
import sys

from nmt.errors import NmtError
from nmt.serve.load_test import format_table, load_test


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a loopback server")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="one run per value")
    parser.add_argument("--requests", type=int, default=400, help="most requests per run")
    parser.add_argument("--duration", type=float, default=20.0, help="most seconds per run")
    parser.add_argument("--lines-per-request", type=int, default=1)
    parser.add_argument("--beam-size", type=int, default=None, help="default: the server's")
    parser.add_argument("--input", default=None, help="sentences, one per line (default: digit words)")
    parser.add_argument("--label", default=None, help="a first column naming the run, e.g. 'batching on'")
    args = parser.parse_args()
    try:
        rows = load_test(
            args.url,
            args.clients,
            args.requests,
            args.duration,
            args.input,
            args.lines_per_request,
            args.beam_size,
            args.label,
            on_row=lambda row: print(format_table([row]).splitlines()[-1], file=sys.stderr, flush=True),
        )
    except NmtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_table(rows))


if __name__ == "__main__":
    main()
