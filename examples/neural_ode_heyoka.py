"""Train a neural ODE with heyoka's variational equations, then save the trained model as .h5.

A small torch MLP f is the right-hand side of dx/dt = f(x). polyir turns it into a heyoka ODE
system whose weights are heyoka parameters (`to_heyoka_ode(g, params=True)`), heyoka's
`var_ode_sys` adds the sensitivities dx(t)/dp, and plain gradient descent (Adam, in numpy) fits
the trajectory from x0 to samples of a damped spiral. The trained par vector goes back into the
graph (`write_params`, guided by the par map), the graph is saved, reloaded and checked: its torch
module computes the same right-hand side as heyoka with the trained parameters.

    .venv/bin/python examples/neural_ode_heyoka.py [--steps 150] [--out neural_ode.h5]
"""
from __future__ import annotations

import argparse
import time

import heyoka as hy
import numpy as np
import torch

import polyir
from polyir.importers.heyoka_params import write_params

#: the system the samples come from: a damped spiral dx/dt = A x.
A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
X0 = np.array([2.0, 0.0])
TIMES = np.linspace(0.0, 1.5, 16)


def samples() -> np.ndarray:
    """x(t) = expm(A t) x0 at TIMES, from A's eigen-decomposition."""
    lam, vec = np.linalg.eig(A)
    coef = np.linalg.solve(vec, X0)
    return np.array([(vec @ (np.exp(lam * t) * coef)).real for t in TIMES])


def initial_graph(seed: int = 0, hidden: int = 8) -> polyir.Graph:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(),
                                torch.nn.Linear(hidden, 2)).double()
    return polyir.export(model, torch.zeros(1, 2, dtype=torch.float64))


class Trajectory:
    """heyoka's variational integrator for dx/dt = graph(x): loss and gradient in one pass."""

    def __init__(self, graph: polyir.Graph):
        self.ode = polyir.to_heyoka_ode(graph, params=True)
        self.n_par = len(self.ode.par_values)
        sys = hy.var_ode_sys(self.ode.sys, hy.var_args.params, order=1)
        self.ta = hy.taylor_adaptive(sys, list(X0), pars=self.ode.par_values, compact_mode=True)
        self.state0 = self.ta.state.copy()  # x0 and zero sensitivities

    def loss_and_grad(self, params: np.ndarray, target: np.ndarray):
        ta = self.ta
        ta.time = 0.0
        ta.state[:] = self.state0
        ta.pars[:] = params
        out = ta.propagate_grid(TIMES)[-1]       # (len(TIMES), 2 + 2 * n_par)
        err = out[:, :2] - target                  # (len(TIMES), 2)
        sens = out[:, 2:].reshape(len(TIMES), 2, self.n_par)  # dx_c(t)/dp_j
        loss = float(np.sum(err ** 2))
        grad = 2.0 * np.einsum("tc,tcj->j", err, sens)
        return loss, grad


def train(steps: int = 150, lr: float = 0.02, seed: int = 0):
    """Adam on the trajectory loss; returns (graph, trained par vector, par map, losses)."""
    g = initial_graph(seed)
    traj = Trajectory(g)
    target = samples()
    p = traj.ode.par_values.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    losses = []
    for k in range(1, steps + 1):
        loss, grad = traj.loss_and_grad(p, target)
        losses.append(loss)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad ** 2
        p -= lr * (m / (1 - 0.9 ** k)) / (np.sqrt(v / (1 - 0.999 ** k)) + 1e-8)
    losses.append(traj.loss_and_grad(p, target)[0])
    return g, p, traj.ode.par_map, losses, traj


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default="neural_ode.h5")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    g, params, par_map, losses, _ = train(args.steps)
    print(f"{len(params)} parameters as heyoka pars; par[0] is {par_map[0]}")
    print(f"trajectory loss {losses[0]:.4f} -> {losses[-1]:.4f} after {args.steps} Adam steps "
          f"({time.perf_counter() - t0:.1f} s, gradients from heyoka.var_ode_sys)")
    trained = write_params(g, params, par_map)
    polyir.save(trained, args.out)
    back = polyir.load(args.out)
    module = polyir.to_torch(back)
    pts = np.random.default_rng(1).uniform(-2, 2, size=(64, 2))
    exprs, xs, _, _ = polyir.to_heyoka(back, params=True)
    rhs = hy.cfunc(exprs, xs)(pts.T.copy(), pars=np.repeat(params[:, None], 64, 1)).T
    with torch.no_grad():
        diff = np.abs(module(torch.from_numpy(pts)).numpy() - rhs).max()
    print(f"saved {args.out}; reloaded torch module vs heyoka with the trained pars: "
          f"max |diff| {diff:.1e}")
    return losses, diff, params


if __name__ == "__main__":
    main()
