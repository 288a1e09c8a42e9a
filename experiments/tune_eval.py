"""Choose the cache's and dynamic evaluation's hyperparameters on the validation split,
then apply them once to the test split.

    python experiments/tune_eval.py --workdir=DIR [--out=FILE.json]

DIR is a trained run (config.json, vocab.txt, checkpoints/). Every pass walks the split
as one stream (batch 1, TF's test protocol) in segments of --num_steps. The search, all
on valid:
  1. cache: lambda x theta at a window of 500, then the best pair at windows 100 and 2000;
  2. dynamic evaluation: RMS rule, learning rate x decay; plain SGD, learning rate;
  3. both: the best dynamic evaluation with the best cache's window and theta, lambda
     searched again (the adapted model needs less of the cache).
Then plain / cache / dynamic / both on test, each timed on its second pass (the first
compiles). Prints a table and writes every number to --out.
"""

import argparse
import itertools
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from lstm_lm import adaptive, data, inference  # noqa: E402

# A first search (recorded in experiments/adaptive_eval/) had thetas 0.3-1.0, RMS learning
# rates 1e-5-3e-4, decays up to 0.02 and SGD rates 0.01-0.3; its best values sat at the
# grid's edges, so the grids were moved out past them.
CACHE_LAMBDAS = (0.05, 0.1, 0.15, 0.2)
CACHE_THETAS = (0.1, 0.2, 0.3, 0.6)
CACHE_WINDOWS = (100, 2000)  # besides 500
RMS_LRS = (1e-4, 3e-4, 1e-3, 3e-3)
RMS_DECAYS = (0.0, 0.0002, 0.002)
SGD_LRS = (0.1, 0.3, 1.0, 3.0)


def perplexity(run, ids, num_steps, rms, cache=None, dynamic=None) -> tuple[float, float]:
    """(perplexity, seconds) of one pass over `ids`."""
    start = time.perf_counter()
    log_probs = adaptive.stream_log_probs(
        run.params, ids, 1, num_steps, cfg=run.cfg, cache=cache, dynamic=dynamic, rms=rms
    )
    seconds = time.perf_counter() - start
    return adaptive.stream_perplexity(log_probs), seconds


def search(run, ids, num_steps, rms, candidates, log):
    """The candidate (cache, dynamic) with the lowest perplexity on `ids`, all logged."""
    best = None
    for cache, dynamic in candidates:
        ppl, seconds = perplexity(run, ids, num_steps, rms, cache, dynamic)
        log.append(dict(cache=describe(cache), dynamic=describe(dynamic), valid=ppl))
        print(f"  valid {ppl:8.3f}  {describe(cache)} {describe(dynamic)} ({seconds:.0f} s)")
        if best is None or ppl < best[0]:
            best = (ppl, cache, dynamic)
    return best


def describe(options) -> dict | None:
    return None if options is None else vars(options).copy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num_steps", type=int, default=inference.ADAPTIVE_STEPS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    run = inference.load_run(pathlib.Path(args.workdir))
    corpus = data.load(run.config.data)
    start = time.perf_counter()
    rms = inference.training_rms(run, corpus.train, adaptive.Dynamic(0.0), 0)
    print(f"gradient RMS over the training split: {time.perf_counter() - start:.0f} s")
    valid, T, log = corpus.valid, args.num_steps, []

    plain_valid, _ = perplexity(run, valid, T, rms)
    print(f"plain valid {plain_valid:.3f}\ncache:")
    grid = [
        adaptive.Cache(500, lam, theta)
        for lam, theta in itertools.product(CACHE_LAMBDAS, CACHE_THETAS)
    ]
    _, cache, _ = search(run, valid, T, rms, [(c, None) for c in grid], log)
    others = [adaptive.Cache(w, cache.lam, cache.theta) for w in CACHE_WINDOWS]
    cache_ppl, cache, _ = search(run, valid, T, rms, [(c, None) for c in [cache, *others]], log)
    print("dynamic evaluation:")
    grid = [adaptive.Dynamic(lr, decay) for lr, decay in itertools.product(RMS_LRS, RMS_DECAYS)]
    grid += [adaptive.Dynamic(lr, 0.0, rms=False) for lr in SGD_LRS]
    dynamic_ppl, _, dynamic = search(run, valid, T, rms, [(None, d) for d in grid], log)
    print("both:")
    grid = [adaptive.Cache(cache.window, lam, cache.theta) for lam in CACHE_LAMBDAS]
    both_ppl, both_cache, _ = search(run, valid, T, rms, [(c, dynamic) for c in grid], log)

    chosen = {
        "plain": (None, None, plain_valid),
        "cache": (cache, None, cache_ppl),
        "dynamic": (None, dynamic, dynamic_ppl),
        "both": (both_cache, dynamic, both_ppl),
    }
    results = {}
    print("\n| mode | valid | test | test words/s | cache | dynamic |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode, (c, d, valid_ppl) in chosen.items():
        perplexity(run, corpus.test, T, rms, c, d)  # compiles
        test_ppl, seconds = perplexity(run, corpus.test, T, rms, c, d)
        words_per_sec = (len(corpus.test) - 1) / seconds
        results[mode] = dict(
            valid=valid_ppl,
            test=test_ppl,
            test_words_per_sec=words_per_sec,
            cache=describe(c),
            dynamic=describe(d),
        )
        print(
            f"| {mode} | {valid_ppl:.2f} | {test_ppl:.2f} | {words_per_sec:,.0f} | "
            f"{describe(c)} | {describe(d)} |"
        )
    if args.out:
        record = dict(workdir_step=run.step, num_steps=T, results=results, search=log)
        pathlib.Path(args.out).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
