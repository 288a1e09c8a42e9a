"""What torch.optim.ASGD(t0=0, lambd=0) does under AWD-LSTM's loop, which sets the
group's learning rate before each step (lr * seq_len / bptt): four steps on a
two-number parameter with known gradients and a different rate each step. Prints each
step's parameter, ASGD's average `ax` and its `eta`, then the plain means of the
iterates 1..4 and 2..4 (needs PyTorch: pip install torch==2.13.0).

    python experiments/exact_recipes/torch_asgd.py
"""

import numpy as np
import torch


def main():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = torch.optim.ASGD([p], lr=0.1, t0=0, lambd=0.0, weight_decay=0.0)
    grads = [[1.0, -1.0], [0.5, 0.5], [-2.0, 1.0], [1.0, 1.0]]
    rates = [0.1, 0.2, 0.3, 0.4]  # what AWD's loop sets before each step
    iterates = []
    for step, (grad, rate) in enumerate(zip(grads, rates), start=1):
        opt.param_groups[0]["lr"] = rate
        before = p.detach().clone()
        p.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
        iterates.append(p.detach().numpy().copy())
        used = float((before - p.detach())[0] / grad[0])
        state = opt.state[p]
        print(
            f"step {step}: rate set {rate}, rate used {used:.4f}, p {iterates[-1]}, "
            f"ax {state['ax'].numpy()}"
        )
    iterates = np.stack(iterates)
    print("mean of iterates 1..4", iterates.mean(0), "; of 2..4", iterates[1:].mean(0))
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
