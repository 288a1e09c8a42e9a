"""Fixtures: a one-file HTTP server on 127.0.0.1, and a finished tiny run. Shared helpers
are in helpers.py."""

import http.server
import threading

import pytest
from helpers import TINY, run_main, write_corpus


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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A finished 2-epoch ptb_tiny run on the synthetic corpus: (tmp dir, workdir, process)."""
    tmp = tmp_path_factory.mktemp("trained")
    data_dir = write_corpus(tmp / "data")
    workdir = tmp / "run"
    proc = run_main(tmp, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *TINY)
    assert proc.returncode == 0, proc.stderr
    return tmp, workdir, proc
