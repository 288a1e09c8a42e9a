"""Training and evaluation throughput: lstm_lm's jitted steps against PyTorch's nn.LSTM.

    python experiments/benchmark.py [--shapes=small,medium] [--windows=10]

Both sides run the same model (embedding, stacked LSTM, softmax layer), batch, steps,
cost (cross-entropy summed over time, averaged over the batch), gradient clipping and
SGD, on random token ids. Each side runs in a process of its own that imports only its
own framework, as a user's would. After a warm-up the two processes take turns, one
timed window each; medians are reported, and the median ratio of neighbouring windows.
PyTorch is optional (`pip install -e ".[bench]"`); without it only our numbers are
printed. Each process also reports its start-up time (process start to the first trained
batch, imports and compilation included) and its peak resident memory.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

PROCESS_START = time.perf_counter()

import numpy as np  # noqa: E402

SHAPES = {  # name: (hidden_size, num_steps, max_grad_norm); 2 layers, batch 20, V=10,000
    "tiny": (8, 5, 5.0),  # for smoke tests of the scripts
    "small": (200, 20, 5.0),
    "medium": (650, 35, 5.0),
    "large": (1500, 35, 10.0),
}
VOCAB, LAYERS, BATCH = 10_000, 2, 20
BATCHES = {"tiny": 2, "small": 40, "medium": 8, "large": 3}  # per timed window, by default


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
        from lstm_lm import config as config_lib
        from lstm_lm import model, parallel, train

        config = config_lib.default_config()
        config.model.update(hidden_size=hidden, keep_prob=keep_prob, num_layers=LAYERS)
        config.optim.max_grad_norm = max_grad_norm
        config.train.update(num_steps=num_steps, batch_size=BATCH)
        self.cfg = config_lib.model_config(config, VOCAB)
        mesh = parallel.make_mesh(1)
        self.state, _, self.train_fn, self.eval_fn = train.create_training(
            config, self.cfg, steps_per_epoch=10**6, mesh=mesh
        )
        # Placed as the trainer places it: an uncommitted carry would make the second call
        # compile again, for the sharding the first call's output carry has.
        self.carry = parallel.put_carry(model.zero_carry(self.cfg, BATCH), mesh)
        self.eval_carry = model.zero_carry(self.cfg, BATCH)  # each pass starts from it

    def train(self, inputs_NxBxT, targets_NxBxT) -> float:
        self.state, self.carry, metrics_N, _ = self.train_fn(
            self.state, self.carry, inputs_NxBxT, targets_NxBxT
        )
        return float(metrics_N["cross_entropy"].sum())

    def evaluate(self, inputs_NxBxT, targets_NxBxT) -> float:
        carry = self.eval_carry
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
    import jax
    import jax.numpy as jnp

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


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, unlike
    ru_maxrss, which a subprocess inherits from the parent it was forked from."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(peer: str, shape: str, batches: int) -> None:
    """One peer in this process, driven over stdin/stdout by `throughput`: trains one
    batch (start-up time), warms up on the window's batches, then answers each line
    "train" or "eval" with the words/s of one timed window, as a JSON line, until EOF,
    when it reports its peak memory. Each window follows one untimed batch of its mode,
    so that it starts with this process's threads awake and its caches warm, whichever
    process ran last (without it PyTorch's eval windows measured up to 30% slower)."""
    hidden, num_steps, max_grad_norm = SHAPES[shape]
    runner = {"ours": Ours, "torch": Torch}[peer](hidden, num_steps, max_grad_norm)
    one_batch = random_batches(1, num_steps, seed=1)
    runner.train(*one_batch)
    ready = {"first_batch_s": time.perf_counter() - PROCESS_START}
    inputs, targets = random_batches(batches, num_steps)
    runner.train(inputs, targets)  # warm-up: compile, allocate
    runner.evaluate(inputs, targets)
    runner.evaluate(*one_batch)
    if peer == "ours":
        ready["matmul_peak_gflops"] = matmul_peak_gflops()
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        fn = runner.train if line.strip() == "train" else runner.evaluate
        fn(*one_batch)
        print(json.dumps(timed_words_per_sec(fn, inputs, targets)), flush=True)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


class Worker:
    """A worker subprocess run as `cmd` (in environment `env`, else this one's): it prints
    a JSON line when ready, then one per line it is sent, and a last one when its input
    closes; `ask` sends a line and returns its JSON answer."""

    def __init__(self, cmd: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.ready = self.answer()

    def answer(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.proc.args} exited: {self.proc.wait()}")
        return json.loads(line)

    def ask(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> dict:
        self.proc.stdin.close()
        last = self.answer()
        self.proc.wait()
        return last


def take_turns(workers: dict, rounds: int) -> dict:
    """{(name, mode): words/s of each window}: in each round every worker runs one timed
    window of "train", then each one of "eval", the first worker rotating from round to
    round."""
    names = list(workers)
    rates = {(name, mode): [] for name in names for mode in ("train", "eval")}
    for round_ in range(rounds):
        first = round_ % len(names)
        for mode in ("train", "eval"):
            for name in names[first:] + names[:first]:
                rates[name, mode].append(workers[name].ask(mode))
    return rates


def throughput(shape: str, windows: int, batches: int, peers: list[str]) -> dict:
    """Median words/s of each peer's train and eval, one process per peer. In each round
    the peers take turns, one window each, train then eval, the first peer alternating
    from round to round. With two peers, `{mode}_ratio` is the median over rounds of
    ours / torch within the round: on a shared machine whose speed drifts by 10-15% over
    minutes, the pairs of neighbouring windows compare more fairly than the two medians.
    Also each peer's start-up time, peak memory and (ours) the matmul peak."""
    workers = {  # one warms up at a time
        peer: Worker(
            [
                sys.executable,
                __file__,
                f"--worker={peer}",
                f"--shapes={shape}",
                f"--batches={batches}",
            ]
        )
        for peer in peers
    }
    rates = take_turns(workers, windows)
    result = {f"{peer}_{mode}": float(np.median(r)) for (peer, mode), r in rates.items()}
    if len(peers) == 2:
        for mode in ("train", "eval"):
            ratios = np.divide(rates["ours", mode], rates["torch", mode])
            result[f"{mode}_ratio"] = float(np.median(ratios))
    for peer, w in workers.items():
        result.update({f"{peer}_{k}": v for k, v in {**w.ready, **w.close()}.items()})
    return result


def torch_version() -> str | None:
    """PyTorch's version, asked of a subprocess (this one stays free of it); None if absent."""
    cmd = [sys.executable, "-c", "import torch; print(torch.__version__)"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="small,medium")
    parser.add_argument("--windows", type=int, default=10, help="rounds")
    parser.add_argument("--batches", type=int, default=0, help="per window; 0 = by shape")
    parser.add_argument("--worker", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.shapes, args.batches or BATCHES[args.shapes])

    version = torch_version()
    peers = ["ours", "torch"] if version else ["ours"]
    print(f"PyTorch {version}; each peer in its own process")
    header = "shape    mode   ours w/s  torch w/s  ours/torch  ours % of peak  (ratio of medians)"
    results = {"torch": version}
    for shape in args.shapes.split(","):
        r = throughput(shape, args.windows, args.batches or BATCHES[shape], peers)
        results[shape] = r
        peak = r["ours_matmul_peak_gflops"]
        print(f"\n{shape}: matmul peak (JAX, 2000^3 float32) {peak:.0f} GFLOP/s\n{header}")
        ceiling = peak * 1e9 / flops_per_word(SHAPES[shape][0])
        for mode in ("train", "eval"):
            ours, theirs = r[f"ours_{mode}"], r.get(f"torch_{mode}", float("nan"))
            ratio = r.get(f"{mode}_ratio", float("nan"))
            fraction = ours / ceiling if mode == "train" else ours / (3 * ceiling)
            print(
                f"{shape:8} {mode:5} {ours:9.0f} {theirs:10.0f} {ratio:11.2f}"
                f" {100 * fraction:14.0f}%  ({ours / theirs:.2f})"
            )
        for name in peers:
            print(
                f"{shape:8} {name:5} first trained batch {r[f'{name}_first_batch_s']:.1f}s,"
                f" peak memory {r[f'{name}_peak_rss_mib']:.0f} MiB"
            )
    print("\n" + json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
