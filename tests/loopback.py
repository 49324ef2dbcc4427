"""A file server on 127.0.0.1 for download tests: serves ``files`` (URL path -> bytes), 404 for
anything else, with HTTP Range support. ``mode`` changes behaviour per test: ``slow`` (answers
after 1.5 s), ``no-range`` (ignores Range, always 200), ``cut-once`` (drops the connection
halfway through a transfer that starts at byte 0). Every request is recorded."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time


class LoopbackServer:
    def __init__(self, files: dict[str, bytes] | None = None):
        self.files: dict[str, bytes] = dict(files or {})
        self.mode = "ok"
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                payload = outer.files.get(self.path)
                if payload is None:
                    self.send_error(404, "Not Found")
                    return
                if outer.mode == "slow":
                    time.sleep(1.5)
                start = 0
                rng = self.headers.get("Range")
                if rng and outer.mode != "no-range":
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                else:
                    self.send_response(200)
                body = payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.mode == "cut-once" and start == 0:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the server drops the connection midway
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # the client may have given up (timeout test)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
