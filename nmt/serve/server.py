"""Run the API with uvicorn: ``scripts/serve.py`` calls :func:`serve`."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nmt.config import ServeConfig
from nmt.errors import NmtError


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: ServeConfig) -> None:
    """Load ``cfg.model_dir`` and serve it on ``cfg.host:cfg.port`` until interrupted."""
    import uvicorn

    from nmt.device import set_threads
    from nmt.serve.app import create_app
    from nmt.translate import Translator

    set_threads(cfg.threads)
    if not is_loopback(cfg.host):
        print(
            f"warning: host={cfg.host} makes the API reachable from other machines; it has no authentication",
            file=sys.stderr,
        )
    translator = Translator.from_config(cfg)
    app = create_app(translator, cfg)
    print(f"serving {cfg.model_dir} on http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=cfg.host, port=cfg.port, access_log=cfg.access_log, log_level="warning")


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` (loopback) from a background thread; yields the base URL.

    The socket is bound before the server starts, so the port cannot be taken in between. Used by the browser
    test and for screenshots; the server stops when the block ends.
    """
    import uvicorn

    if not is_loopback(host):
        raise NmtError(f"host={host}: a background test server listens on loopback only")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise NmtError(f"the server on {host}:{port} did not start within {start_timeout_s} s")
        time.sleep(0.02)
    try:
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=start_timeout_s)
        sock.close()
