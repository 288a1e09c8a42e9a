"""Where a training step's time goes, op by op: lstm_lm under `jax.profiler` beside PyTorch
under `torch.profiler`, the same model and batches as `benchmark.py`.

    python experiments/profile_step.py [--shape=medium] [--batches=8] [--top=25]

Each peer runs in a process of its own (as in the benchmark), trains one call of
`--batches` batches to warm up, then one profiled call. Ours: the trace's events are
XLA's thunks, named after the instructions of the optimized HLO, which gives each its
output shape and the JAX operation it came from; PyTorch: `key_averages` by op and
input shapes. Times are per batch. Each op also gets a role (the softmax layer's
matmuls, the LSTM's input projections, the recurrent steps, ...), from its shapes, so
that the two sides can be added up side by side at the end.

Two cautions for our side: XLA runs independent thunks side by side (the softmax layer's
two backward matmuls do), so its ops add up to more than the wall time; and a plain
`dot` thunk (Eigen's, not a YNNPACK fusion: here the LSTM's weight gradients) returns
before its work on the thread pool is done, so its row understates it.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import benchmark

ROLES = (  # in the order of the summary table
    "softmax: logits = h @ W.T",
    "softmax: dh = dlogits @ W",
    "softmax: dW = dlogits.T @ h",
    "cross-entropy: log-softmax, its gradient, the target's, the bias gradient",
    "LSTM: input projections x @ W_x",
    "LSTM: recurrent steps, forward",
    "LSTM: recurrent steps, backward",
    "LSTM: dx and the weight gradients",
    "embedding, forward and gradient",
    "optimizer: norm, clip, update",
    "other",
)


def hlo_instructions(hlo_text: str) -> dict:
    """name -> (output shape string, opcode, op_name metadata, operand names, whether it
    is or fuses a matmul) of each instruction of an optimized HLO module's text."""
    line_re = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\((.*?)\)")
    computations, current = collections.defaultdict(str), None
    for line in hlo_text.splitlines():
        header = re.match(r"^%?([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(1)
        elif current:
            computations[current] += line + "\n"
    out = {}
    for line in hlo_text.splitlines():
        m = line_re.match(line)
        if m:
            op_name = re.search(r'op_name="([^"]*)"', line)
            operands = re.findall(r"%([\w.\-]+)", m.group(4))
            called = re.search(r"calls=%([\w.\-]+)", line)
            matmul = m.group(3) == "dot" or bool(
                called and re.search(r" dot\(", computations[called.group(1)])
            )
            out[m.group(1)] = (
                m.group(2),
                m.group(3),
                op_name.group(1) if op_name else "",
                operands,
                matmul,
            )
    return out


def dims(shape: str) -> tuple:
    m = re.search(r"\[([\d,]*)\]", shape)
    return tuple(int(d) for d in m.group(1).split(",") if d) if m else ()


def our_role(name, instructions, hidden) -> str:
    """The role of one instruction of our step, from its output's and operands' shapes."""
    shape, opcode, op_name, operands, matmul = instructions[name]
    out_dims = dims(shape)
    operand_dims = [dims(instructions[o][0]) for o in operands if o in instructions]
    vocab = benchmark.VOCAB
    backward = "transpose(" in op_name
    if op_name.count("while/body") >= 2:  # inside the time loop, itself inside the batch loop
        return ROLES[6] if backward else ROLES[5]
    if matmul and vocab in out_dims:
        return ROLES[2] if backward else ROLES[0]
    if matmul and any(vocab in d for d in operand_dims):
        return ROLES[1]
    if matmul:
        return ROLES[7] if backward else ROLES[4]
    if "gather" in op_name or ("scatter" in op_name and vocab not in out_dims[-1:]):
        return ROLES[8]
    if out_dims == (vocab, hidden) and "broadcast" in op_name:  # the embedding gradient's zeros
        return ROLES[8]
    if vocab in out_dims and ("softmax" in op_name or "take_along_axis" in op_name or backward):
        return ROLES[3]
    if op_name.endswith("jvp()/add") and out_dims[-1:] == (4 * hidden,):  # + b after x @ W_x
        return ROLES[4]
    update = op_name.endswith("closed_call/add")  # params + (-lr * scale) * grads
    partial_norm = not op_name and name.startswith("ynn_fusion")  # sums of squares
    if update or partial_norm or (out_dims == () and "reduce_sum" in op_name):
        return ROLES[9]
    return ROLES[10]


def profile_ours(shape, batches, out_dir):
    import jax

    hidden, num_steps, max_grad_norm = benchmark.SHAPES[shape]
    runner = benchmark.Ours(hidden, num_steps, max_grad_norm)
    inputs, targets = benchmark.random_batches(batches, num_steps)
    runner.train(inputs, targets)
    runner.train(inputs, targets)
    hlo = runner.train_fn.lower(runner.state, runner.carry, inputs, targets).compile().as_text()
    instructions = hlo_instructions(hlo)
    with jax.profiler.trace(out_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        runner.train(inputs, targets)
        wall = (time.perf_counter() - start) * 1e3
    (path,) = glob.glob(os.path.join(out_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    total_ms, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["name"] in instructions:
            total_ms[e["name"]] += e["dur"] / 1e3
            calls[e["name"]] += 1
    rows = []
    for name, ms in total_ms.items():
        shape, _, op_name, _, _ = instructions[name]
        what = op_name.replace("jit(train_chunk)/while/body/", "").replace("closed_call/", "")
        rows.append(
            dict(
                op=name,
                shape=re.sub(r"\{[^}]*\}", "", shape),
                what=what[-60:],
                role=our_role(name, instructions, hidden),
                ms=ms / batches,
                calls=calls[name] / batches,
            )
        )
    return dict(rows=rows, wall_ms=wall / batches)


def torch_role(name, shapes, hidden) -> str:
    v = benchmark.VOCAB
    flat = [tuple(s) for s in shapes if s]
    if name == "aten::addmm" and flat and flat[0] == (v,):
        return ROLES[0]
    if name == "aten::mm" and len(flat) == 2:
        if flat[0][0] == v:
            return ROLES[2]
        if flat[0][-1] == v:
            return ROLES[1]
    if "rnn_layer_backward" in name:
        return ROLES[6]
    if "rnn_layer" in name:
        return ROLES[5]
    if "softmax" in name or "nll_loss" in name:
        return ROLES[3]
    if name in ("aten::fill_", "aten::sum", "aten::copy_") and any(s[-1] == v for s in flat):
        return ROLES[3]
    if "embedding" in name or "index_select" in name:
        return ROLES[8]
    optimizer_ops = ("aten::add_", "aten::mul_", "aten::fill_", "aten::zero_")
    if "norm" in name or name in optimizer_ops or "Optimizer" in name:
        return ROLES[9]
    return ROLES[10]


def profile_torch(shape, batches):
    from torch.profiler import ProfilerActivity, profile

    hidden, num_steps, max_grad_norm = benchmark.SHAPES[shape]
    runner = benchmark.Torch(hidden, num_steps, max_grad_norm)
    inputs, targets = benchmark.random_batches(batches, num_steps)
    runner.train(inputs, targets)
    runner.train(inputs, targets)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        runner.train(inputs, targets)
        wall = time.perf_counter() - start
    rows = []
    for avg in prof.key_averages(group_by_input_shape=True):
        if avg.self_cpu_time_total <= 0:
            continue
        shapes = [list(s) for s in avg.input_shapes]
        rows.append(
            dict(
                op=avg.key,
                shape=" ".join(str(s) for s in shapes if s)[:60],
                what="",
                role=torch_role(avg.key, shapes, hidden),
                ms=avg.self_cpu_time_total / 1e3 / batches,
                calls=avg.count / batches,
            )
        )
    return dict(rows=rows, wall_ms=wall * 1e3 / batches)


def print_rows(title, result, top):
    rows = sorted(result["rows"], key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows)
    print(
        f"\n## {title}: {result['wall_ms']:.1f} ms per batch (wall, profiled), "
        f"{total:.1f} ms in ops\n"
    )
    print("| ms/batch | share | calls/batch | op | output or input shapes | role | from |")
    print("| ---: | ---: | ---: | --- | --- | --- | --- |")
    for r in rows[:top]:
        print(
            f"| {r['ms']:.1f} | {r['ms'] / total:.0%} | {r['calls']:g} | {r['op']} | "
            f"{r['shape']} | {r['role']} | {r['what']} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="medium", choices=sorted(benchmark.SHAPES))
    parser.add_argument("--batches", type=int, default=8, help="batches in the profiled call")
    parser.add_argument("--top", type=int, default=25, help="ops listed per peer")
    parser.add_argument("--peer", choices=("ours", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:  # a worker: profile one peer, print its rows as JSON
        if args.peer == "ours":
            with tempfile.TemporaryDirectory() as out_dir:
                result = profile_ours(args.shape, args.batches, out_dir)
        else:
            result = profile_torch(args.shape, args.batches)
        print(json.dumps(result))
        return
    results = {}
    for peer in ("ours", "torch"):
        cmd = [
            sys.executable,
            __file__,
            f"--shape={args.shape}",
            f"--batches={args.batches}",
            f"--peer={peer}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"{peer}: failed\n{done.stderr[-2000:]}")
            continue
        results[peer] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"# One training call of {args.batches} {args.shape} batches, per batch")
    for peer, result in results.items():
        print_rows(
            {"ours": "lstm_lm (jax.profiler)", "torch": "PyTorch (torch.profiler)"}[peer],
            result,
            args.top,
        )
    print("\n## By role, ms per batch\n")
    print("| role | " + " | ".join(results) + " |")
    print("| --- |" + " ---: |" * len(results))
    for role in ROLES:
        cells = [sum(r["ms"] for r in res["rows"] if r["role"] == role) for res in results.values()]
        print(f"| {role} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    totals = [sum(r["ms"] for r in res["rows"]) for res in results.values()]
    print("| all ops | " + " | ".join(f"{c:.1f}" for c in totals) + " |")
    walls = [res["wall_ms"] for res in results.values()]
    print("| wall | " + " | ".join(f"{c:.1f}" for c in walls) + " |")


if __name__ == "__main__":
    main()
