"""Fixtures: a one-file HTTP server on 127.0.0.1, and a finished tiny run; and one
persistent compilation cache for the whole session. Shared helpers are in helpers.py."""

import os
import shutil
import tempfile

# One JAX compilation cache for the session, set before anything imports JAX: this
# process, every main.py the tests start (helpers.main_command) and every other
# subprocess (by JAX's environment variables) keep what they compile in it and take it
# from there. The tests build the same small models over and over, and a program taken
# from the cache is the one that was compiled. Set $LSTM_LM_TEST_JAX_CACHE to keep it
# between sessions; otherwise it is a fresh directory, removed at the end.
_OWN_CACHE = "LSTM_LM_TEST_JAX_CACHE" not in os.environ
JAX_CACHE = os.environ.setdefault(
    "LSTM_LM_TEST_JAX_CACHE", tempfile.mkdtemp(prefix="lstm_lm_test_jax_cache_")
)
os.environ.update(
    JAX_COMPILATION_CACHE_DIR=JAX_CACHE,
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
)

import http.server  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402
from helpers import TINY, run_main, write_corpus  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(JAX_CACHE, ignore_errors=True)


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
    """A finished 2-epoch ptb_tiny run on the synthetic corpus: (tmp dir, workdir, process).
    Its compilation cache is its own, tmp/jax_cache, so that a test can see what it holds."""
    tmp = tmp_path_factory.mktemp("trained")
    data_dir = write_corpus(tmp / "data")
    workdir = tmp / "run"
    args = f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", *TINY
    proc = run_main(tmp, *args, cache_dir=tmp / "jax_cache")
    assert proc.returncode == 0, proc.stderr
    return tmp, workdir, proc
