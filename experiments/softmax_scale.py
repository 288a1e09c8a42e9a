"""Training words/s and peak memory of the output layers at a large vocabulary: the full
softmax against the adaptive softmax (and optionally the mixture of softmaxes).

    python experiments/softmax_scale.py [--shapes=wt103,ptb] [--layers=full,adaptive]
        [--windows=5]

Each layer trains in a process of its own (lstm_lm's jitted training chunk, as
train_and_evaluate builds it: clip_by_global_norm + SGD), on token ids drawn from a Zipf
distribution over the shape's vocabulary (the words/s of these layers do not depend on
the text: the adaptive softmax scores every cluster for every row). After a warm-up the
processes take turns, one timed window each; medians are reported, and the median ratio
of neighbouring windows against the first layer. Peak memory is each process's VmHWM.
"""

import argparse
import json
import sys
import time

import numpy as np
from benchmark import Worker, peak_rss_mib, timed_words_per_sec

# name: vocabulary, hidden size (2 layers), num_steps, batch, adaptive cutoffs
SHAPES = {
    "tiny": (500, 16, 5, 4, (50, 200)),  # for a smoke test of the script
    "ptb": (10_000, 200, 20, 20, (2000,)),  # ptb_small's shape
    # WikiText-103's vocabulary; the cutoffs of Baevski & Auli (2019) and fairseq's
    # WikiText-103 recipes, div_value 4 (PyTorch's default).
    "wt103": (267_735, 512, 35, 20, (20_000, 60_000)),
}
BATCHES = {"tiny": 2, "ptb": 20, "wt103": 2}  # per timed window
LAYERS = {  # the model keys of each output layer, beyond the shape's
    "full": {},
    "adaptive": {"softmax": "adaptive"},
    "mos": {"softmax": "mos", "mos_experts": 15},
}


def zipf_batches(vocab: int, num_batches: int, batch: int, num_steps: int, seed: int = 0):
    """(inputs, targets) [N, B, T] int32 from a Zipf(1.1) stream: id k ~ 1 / (k + 1)^1.1."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocab + 1) ** 1.1
    tokens = rng.choice(vocab, (num_batches, batch, num_steps + 1), p=weights / weights.sum())
    return tokens[..., :-1].astype(np.int32), tokens[..., 1:].astype(np.int32)


class Trainer:
    """One output layer's training chunk at one shape."""

    def __init__(self, shape: str, layer: str):
        from lstm_lm import config as config_lib
        from lstm_lm import model, parallel, train

        vocab, hidden, num_steps, batch, cutoffs = SHAPES[shape]
        config = config_lib.default_config()
        config.model.update(hidden_size=hidden, **LAYERS[layer])
        if layer == "adaptive":
            config.model.softmax_cutoffs = cutoffs
        config.train.update(num_steps=num_steps, batch_size=batch)
        cfg = config_lib.model_config(config, vocab)
        mesh = parallel.make_mesh(1)
        self.state, _, self.train_fn, _ = train.create_training(
            config, cfg, steps_per_epoch=10**6, mesh=mesh
        )
        self.carry = parallel.put_carry(model.zero_carry(cfg, batch), mesh)
        self.parameters = model.parameter_count(self.state.params)

    def train(self, inputs_NxBxT, targets_NxBxT) -> float:
        self.state, self.carry, metrics_N, _ = self.train_fn(
            self.state, self.carry, inputs_NxBxT, targets_NxBxT
        )
        return float(metrics_N["cross_entropy"].sum())


def worker(shape: str, layer: str) -> None:
    """One layer in this process: warms up, then answers each stdin line with the words/s
    of one timed window (after one untimed batch), and at EOF with its peak memory."""
    start = time.perf_counter()
    trainer = Trainer(shape, layer)
    vocab, _, num_steps, batch, _ = SHAPES[shape]
    inputs, targets = zipf_batches(vocab, BATCHES[shape], batch, num_steps)
    one = inputs[:1], targets[:1]
    trainer.train(inputs, targets)  # compile, allocate
    ready = {"warm_up_s": time.perf_counter() - start, "parameters": trainer.parameters}
    print(json.dumps(ready), flush=True)
    for _ in sys.stdin:
        trainer.train(*one)
        print(json.dumps(timed_words_per_sec(trainer.train, inputs, targets)), flush=True)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


def measure(shape: str, layers: list[str], windows: int) -> dict:
    """Median words/s per layer, the median ratio to layers[0] over rounds, memory."""
    workers = {  # one warms up at a time
        layer: Worker([sys.executable, __file__, f"--worker={layer}", f"--shapes={shape}"])
        for layer in layers
    }
    rates = {layer: [] for layer in layers}
    for round_ in range(windows):
        for layer in layers[round_ % 2 :] + layers[: round_ % 2]:
            rates[layer].append(workers[layer].ask("window"))
    result = {}
    for layer, worker in workers.items():
        result[layer] = {**worker.ready, **worker.close()}
        result[layer]["words_per_sec"] = float(np.median(rates[layer]))
        ratios = np.divide(rates[layer], rates[layers[0]])
        result[layer][f"ratio_to_{layers[0]}"] = float(np.median(ratios))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="wt103,ptb")
    parser.add_argument("--layers", default="full,adaptive")
    parser.add_argument("--windows", type=int, default=5, help="rounds")
    parser.add_argument("--worker", choices=list(LAYERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.shapes, args.worker)
    results = {}
    for shape in args.shapes.split(","):
        vocab, hidden, num_steps, batch, cutoffs = SHAPES[shape]
        results[shape] = r = measure(shape, args.layers.split(","), args.windows)
        print(
            f"\n{shape}: V={vocab:,}, 2 x {hidden}, batch {batch} x {num_steps}, cutoffs {cutoffs}"
        )
        print("layer      words/s  ratio  peak MiB  parameters  warm-up s")
        for layer, m in r.items():
            ratio = m[f"ratio_to_{args.layers.split(',')[0]}"]
            print(
                f"{layer:9} {m['words_per_sec']:8.0f} {ratio:6.2f} {m['peak_rss_mib']:9.0f}"
                f" {m['parameters']:11,} {m['warm_up_s']:10.1f}"
            )
    print("\n" + json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
