"""A loopback HTTP server for download tests: serves a folder, honours `Range: bytes=N-` if asked."""

from __future__ import annotations

import threading
import typing
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeHandler(SimpleHTTPRequestHandler):
    honour_ranges = True
    ranges_seen: typing.ClassVar[list[str]] = []  # each served folder gets its own subclass and list

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not header or not self.honour_ranges or not path.is_file():
            return super().do_GET()
        type(self).ranges_seen.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-"))
        data = path.read_bytes()
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@contextmanager
def serve(folder: Path, honour_ranges: bool = True):
    """Yield (base URL, handler class) of a server on 127.0.0.1 for the duration of the block."""
    handler = type("Handler", (RangeHandler,), {"honour_ranges": honour_ranges, "ranges_seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()
