"""Training and evaluation throughput: lstm_lm's jitted steps against PyTorch's nn.LSTM.

    python experiments/benchmark.py [--shapes=small,medium] [--windows=5]

Both sides run the same model (embedding, stacked LSTM, softmax layer), batch, steps,
cost (cross-entropy summed over time, averaged over the batch), gradient clipping and
SGD, on random token ids. They alternate in timed windows after a warm-up; medians are
reported. PyTorch is optional (`pip install -e ".[bench]"`); without it only our numbers
are printed. Start-up time and peak memory are measured in fresh subprocesses.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

PROCESS_START = time.perf_counter()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lstm_lm import config as config_lib  # noqa: E402
from lstm_lm import model, parallel, train  # noqa: E402

SHAPES = {  # name: (hidden_size, num_steps, max_grad_norm); 2 layers, batch 20, V=10,000
    "tiny": (8, 5, 5.0),  # for smoke tests of the scripts
    "small": (200, 20, 5.0),
    "medium": (650, 35, 5.0),
    "large": (1500, 35, 10.0),
}
VOCAB, LAYERS, BATCH = 10_000, 2, 20


def flops_per_word(hidden: int) -> float:
    """Training FLOPs per word: (LSTM + softmax matmuls forward) x 3 for the backward."""
    lstm = LAYERS * 2 * (2 * hidden) * (4 * hidden)
    return 3 * (lstm + 2 * hidden * VOCAB)


def random_batches(num_batches: int, num_steps: int, seed: int = 0):
    tokens = np.random.default_rng(seed).integers(0, VOCAB, (num_batches, BATCH, num_steps + 1))
    return tokens[..., :-1].astype(np.int32), tokens[..., 1:].astype(np.int32)


class Ours:
    """lstm_lm's train_chunk / eval_pass, jitted as in train_and_evaluate."""

    def __init__(self, hidden, num_steps, max_grad_norm, keep_prob=1.0):
        config = config_lib.default_config()
        config.model.update(hidden_size=hidden, keep_prob=keep_prob, num_layers=LAYERS)
        config.optim.max_grad_norm = max_grad_norm
        config.train.update(num_steps=num_steps, batch_size=BATCH)
        self.cfg = config_lib.model_config(config, VOCAB)
        self.state, _, self.train_fn, self.eval_fn = train.create_training(
            config, self.cfg, steps_per_epoch=10**6, mesh=parallel.make_mesh(1)
        )
        self.carry = model.zero_carry(self.cfg, BATCH)

    def train(self, inputs_NxBxT, targets_NxBxT) -> float:
        self.state, self.carry, metrics_N, _ = self.train_fn(
            self.state, self.carry, inputs_NxBxT, targets_NxBxT
        )
        return float(metrics_N["cross_entropy"].sum())

    def evaluate(self, inputs_NxBxT, targets_NxBxT) -> float:
        carry = model.zero_carry(self.cfg, BATCH)
        return float(self.eval_fn(self.state.params, carry, inputs_NxBxT, targets_NxBxT)[0])


class Torch:
    """The same model and update with torch.nn.LSTM (TF gate semantics are not needed for
    speed: nn.LSTM has two bias vectors and forget bias 0, which costs the same); on the
    GPU when there is one (cuDNN's LSTM), else on the CPU."""

    def __init__(self, hidden, num_steps, max_grad_norm, keep_prob=1.0):
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.embedding = torch.nn.Embedding(VOCAB, hidden).to(self.device)
        self.lstm = torch.nn.LSTM(hidden, hidden, LAYERS, dropout=1 - keep_prob).to(self.device)
        self.decoder = torch.nn.Linear(hidden, VOCAB).to(self.device)
        self.params = [
            *self.embedding.parameters(),
            *self.lstm.parameters(),
            *self.decoder.parameters(),
        ]
        for p in self.params:
            torch.nn.init.uniform_(p, -0.1, 0.1)
        self.optimizer = torch.optim.SGD(self.params, lr=1.0)
        self.max_grad_norm = max_grad_norm
        zeros = torch.zeros(LAYERS, BATCH, hidden, device=self.device)
        self.carry = (zeros, zeros.clone())

    def cost(self, inputs_BxT, targets_BxT):
        inputs_BxT, targets_BxT = inputs_BxT.to(self.device), targets_BxT.to(self.device)
        x_TxBxH = self.embedding(inputs_BxT.T)
        out_TxBxH, carry = self.lstm(x_TxBxH, self.carry)
        logits = self.decoder(out_TxBxH)
        ce = self.torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), targets_BxT.T.reshape(-1), reduction="sum"
        )
        return ce / BATCH, carry

    def train(self, inputs_NxBxT, targets_NxBxT) -> float:
        total = 0.0
        batches = zip(self.torch.from_numpy(inputs_NxBxT), self.torch.from_numpy(targets_NxBxT))
        for x, y in batches:
            self.optimizer.zero_grad(set_to_none=True)
            cost, carry = self.cost(x.long(), y.long())
            cost.backward()
            self.torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.carry = tuple(c.detach() for c in carry)
            total += cost.item()
        return total

    def evaluate(self, inputs_NxBxT, targets_NxBxT) -> float:
        zeros = self.torch.zeros_like(self.carry[0])
        saved, self.carry, total = self.carry, (zeros, zeros.clone()), 0.0
        with self.torch.no_grad():
            batches = zip(self.torch.from_numpy(inputs_NxBxT), self.torch.from_numpy(targets_NxBxT))
            for x, y in batches:
                cost, self.carry = self.cost(x.long(), y.long())
                total += cost.item()
        self.carry = saved
        return total


def matmul_peak_gflops(n: int = 2000, repeats: int = 10) -> float:
    """Best float32 n x n matmul rate of JAX on this machine."""
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def timed_words_per_sec(fn, inputs_NxBxT, targets_NxBxT) -> float:
    start = time.perf_counter()
    fn(inputs_NxBxT, targets_NxBxT)
    return inputs_NxBxT.size / (time.perf_counter() - start)


def throughput(shape: str, windows: int, batches: int, peers: dict) -> dict:
    """Median words/s of each peer's train and eval, alternating windows."""
    hidden, num_steps, max_grad_norm = SHAPES[shape]
    inputs, targets = random_batches(batches, num_steps)
    runners = {name: cls(hidden, num_steps, max_grad_norm) for name, cls in peers.items()}
    for runner in runners.values():  # warm-up: compile, allocate
        runner.train(inputs, targets)
        runner.evaluate(inputs, targets)
    rates = {(name, mode): [] for name in runners for mode in ("train", "eval")}
    for _ in range(windows):
        for name, runner in runners.items():
            rates[name, "train"].append(timed_words_per_sec(runner.train, inputs, targets))
            rates[name, "eval"].append(timed_words_per_sec(runner.evaluate, inputs, targets))
    return {f"{name}_{mode}": float(np.median(r)) for (name, mode), r in rates.items()}


def startup_probe(peer: str, shape: str) -> None:
    """Print JSON: seconds from process start to the first trained batch, and peak RSS
    after a few more batches (run in a fresh subprocess)."""
    hidden, num_steps, max_grad_norm = SHAPES[shape]
    runner = {"ours": Ours, "torch": Torch}[peer](hidden, num_steps, max_grad_norm)
    inputs, targets = random_batches(1, num_steps)
    runner.train(inputs, targets)
    first_batch = time.perf_counter() - PROCESS_START
    for _ in range(3):
        runner.train(inputs, targets)
    print(json.dumps(dict(first_batch_s=first_batch, peak_rss_mib=peak_rss_mib())))


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, unlike
    ru_maxrss, which a subprocess inherits from the parent it was forked from."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(peer: str, shape: str) -> dict:
    cmd = [sys.executable, __file__, f"--probe={peer}", f"--shapes={shape}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="small,medium")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--batches", type=int, default=0, help="per window; 0 = by shape")
    parser.add_argument("--probe", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return startup_probe(args.probe, args.shapes)

    peers = {"ours": Ours}
    try:
        import torch

        peers["torch"] = Torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    peak = matmul_peak_gflops()
    print(f"JAX {jax.__version__} on {jax.devices()}; PyTorch {torch_version}")
    print(f"matmul peak (JAX, 2000^3 float32): {peak:.0f} GFLOP/s\n")
    header = "shape    mode   ours w/s  torch w/s  ours/torch  ours % of peak"
    print(header)
    results = {"matmul_peak_gflops": peak, "jax": jax.__version__, "torch": torch_version}
    for shape in args.shapes.split(","):
        batches = args.batches or {"small": 40, "medium": 8, "large": 3}[shape]
        r = throughput(shape, args.windows, batches, peers)
        for name in peers:
            r.update({f"{name}_{k}": v for k, v in probe(name, shape).items()})
        results[shape] = r
        ceiling = peak * 1e9 / flops_per_word(SHAPES[shape][0])
        for mode in ("train", "eval"):
            ours, theirs = r[f"ours_{mode}"], r.get(f"torch_{mode}", float("nan"))
            fraction = ours / ceiling if mode == "train" else ours / (3 * ceiling)
            print(
                f"{shape:8} {mode:5} {ours:9.0f} {theirs:10.0f} {ours / theirs:11.2f}"
                f" {100 * fraction:14.0f}%"
            )
        for name in peers:
            print(
                f"{shape:8} {name:5} first trained batch {r[f'{name}_first_batch_s']:.1f}s,"
                f" peak memory {r[f'{name}_peak_rss_mib']:.0f} MiB"
            )
    print("\n" + json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
