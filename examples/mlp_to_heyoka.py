"""Train a torch MLP, convert it to heyoka, and integrate it as the right-hand side of an ODE.

The MLP learns the vector field of a damped pendulum, f(theta, omega) = (omega, -sin theta -
0.1 omega), from samples. polyir turns it into one `heyoka.model.ffnn` expression, compiles it as
a heyoka cfunc (checked against torch), and integrates dx/dt = MLP(x) with heyoka's Taylor
integrator beside the true pendulum.

    .venv/bin/python examples/mlp_to_heyoka.py [--steps 800]
"""
from __future__ import annotations

import argparse
import time

import heyoka as hy
import numpy as np
import torch

import polyir


def train_mlp(seed: int = 0, steps: int = 800):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                                torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
    x = (torch.rand(1024, 2, dtype=torch.float64) - 0.5) * torch.tensor([4.0, 4.0],
                                                                        dtype=torch.float64)
    y = torch.stack([x[:, 1], -torch.sin(x[:, 0]) - 0.1 * x[:, 1]], 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        opt.zero_grad()
        loss = torch.mean((model(x) - y) ** 2)
        loss.backward()
        opt.step()
    return model.eval(), float(loss.detach())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps (default 800)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    model, loss = train_mlp(steps=args.steps)
    print(f"trained 2-32-32-2 tanh MLP on the damped pendulum field: mse {loss:.2e} "
          f"({time.perf_counter() - t0:.1f} s)")
    g = polyir.export(model, torch.zeros(1, 2, dtype=torch.float64))
    print(g)

    exprs, variables = polyir.to_heyoka(g)
    print(f"\nheyoka expressions over {variables}: {len(exprs)} outputs, one heyoka.model.ffnn; "
          f"output 0 starts {str(exprs[0])[:90]}...")
    _, _, values, par_map = polyir.to_heyoka(g, params=True)
    print(f"params=True: {len(values)} weights as heyoka par[i] (torch order, par_map[i] = "
          f"{par_map[0]}, ...), ready for "
          "neural-ODE training")

    from polyir.backends.heyoka import compile as heyoka_compile
    prog = heyoka_compile(g)
    pts = np.random.default_rng(0).uniform(-2, 2, size=(100_000, 2))
    with torch.no_grad():
        ref = model(torch.from_numpy(pts)).numpy()
    diff = np.abs(prog(pts) - ref).max()
    assert diff < 1e-9, diff
    print(f"heyoka cfunc vs torch on 100,000 points: max |diff| = {diff:.1e} "
          f"(compiled in {prog.compile_seconds:.2f} s)")

    # dx/dt = MLP(x), beside the true pendulum
    ode = polyir.to_heyoka_ode(g)
    x0 = [1.0, 0.0]
    learned = ode.integrator(x0, tol=1e-12)
    th, om = hy.make_vars("th", "om")
    truth = hy.taylor_adaptive([(th, om), (om, -hy.sin(th) - 0.1 * om)], x0, tol=1e-12)
    grid = np.linspace(0.0, 20.0, 11)
    a = learned.propagate_grid(grid)[-1]
    b = truth.propagate_grid(grid)[-1]
    print("\n   t   theta(MLP)  theta(true)  omega(MLP)  omega(true)")
    for t, (p, q) in zip(grid, zip(a, b)):
        print(f"{t:5.1f}  {p[0]:10.5f}  {q[0]:11.5f}  {p[1]:10.5f}  {q[1]:11.5f}")
    print(f"max |theta error| over 20 s: {np.abs(a[:, 0] - b[:, 0]).max():.2e}")

    # the same ODE integrated with scipy, the right-hand side evaluated by the torch model itself
    from scipy.integrate import solve_ivp

    def torch_field(t, x):
        with torch.no_grad():
            return model(torch.from_numpy(x).reshape(1, 2)).numpy()[0]
    ref = solve_ivp(torch_field, (0.0, 20.0), x0, t_eval=grid, rtol=1e-11, atol=1e-11).y.T
    gap = np.abs(a - ref).max()
    assert gap < 1e-6, gap
    print(f"heyoka's integration of the MLP field vs scipy's with torch evaluating it: "
          f"max |diff| = {gap:.1e}")


if __name__ == "__main__":
    main()
