"""Serve a WSGI app on a free loopback port for the length of a with-block."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Yields the base URL, http://127.0.0.1:PORT."""
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
