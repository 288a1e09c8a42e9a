"""Shared helpers: a small synthetic corpus, running main.py, a one-file HTTP server on
127.0.0.1 and a PTB-shaped tarball."""

import http.server
import io
import pathlib
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_corpus(directory: pathlib.Path) -> pathlib.Path:
    """PTB-format files over 40 words and <unk>, in `directory`; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)] + ["<unk>"]
    for name, lines in (("ptb.train.txt", 400), ("ptb.valid.txt", 60), ("ptb.test.txt", 60)):
        text = "".join(" " + " ".join(rng.choice(words, 8)) + " \n" for _ in range(lines))
        (directory / name).write_text(text)
    return directory


def main_command(tmp_path: pathlib.Path, *args: str, config: str = "ptb_tiny") -> list[str]:
    """main.py with a config (None: no --config) and a compilation cache under tmp_path."""
    config_args = [f"--config={REPO / 'configs' / config}.py"] if config else []
    return [
        sys.executable,
        str(REPO / "main.py"),
        *config_args,
        f"--jax_cache_dir={tmp_path / 'jax_cache'}",
        *args,
    ]


def run_main(tmp_path: pathlib.Path, *args: str, config: str = "ptb_tiny", env=None):
    return subprocess.run(
        main_command(tmp_path, *args, config=config),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def make_tarball(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            payload = text.encode()
            info = tarfile.TarInfo(f"./simple-examples/data/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


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
    """serve(body, claimed_length=None) -> URL of a one-file server on 127.0.0.1."""
    servers = []

    def start(body: bytes, claimed_length: int | None = None) -> str:
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        server.body, server.claimed_length = body, claimed_length
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/simple-examples.tgz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
