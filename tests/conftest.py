"""Fixtures: a one-file HTTP server on 127.0.0.1. Shared helpers are in helpers.py."""

import http.server
import threading

import pytest


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Length", str(self.server.claimed_length or len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(body, claimed_length=None, name=...) -> URL of a one-file server on 127.0.0.1."""
    servers = []

    def start(body: bytes, claimed_length: int | None = None, name="simple-examples.tgz") -> str:
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        server.body, server.claimed_length = body, claimed_length
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/{name}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
