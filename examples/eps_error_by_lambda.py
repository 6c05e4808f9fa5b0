"""How well a trained network predicts ε at each noise level, and how much of its error is the
per-image mean of each colour channel (what a GroupNorm of one channel a group hides from the output).

For held-out images x, fixed noise ε and fixed λ, it prints the Eq. 5 error E‖ε̂ − ε‖² per pixel, the
part of it carried by the per-image channel means of ε̂ − ε, and e^λ·Var(x): the ideal predictor's
error is e^λ·Var(x | z) (ε − ε* = (α/σ)(x − E[x|z]), α²/σ² = e^λ), so this bounds it, tightly at
low λ, where z says little about x.
The network is the run's EMA, as `cfgdiff sample` uses it; evaluated in float32.

    .venv/bin/python examples/eps_error_by_lambda.py demo/runs/shapes16-tiny demo/reference/shapes16.h5

docs/train.md's GroupNorm figures: two runs on the demo's data, the tiny preset as it is (8 groups)
and with ADM's 32 (groups of one channel at width 32), then this script on each:

    cfgdiff train --data demo/data/shapes16.h5 --preset tiny --kimg 20 --run-dir g8
    cfgdiff train --data demo/data/shapes16.h5 --preset tiny --kimg 20 --run-dir g32 --set model.norm_groups=32

(and `--kimg 60` for the 60-kimg figure; `cfgdiff demo` makes demo/data and demo/reference).
"""

import argparse

import torch

from cfgdiff.data.dataset import dataset_info, read_images, read_labels
from cfgdiff.diffusion.network import network_eps
from cfgdiff.diffusion.schedule import alpha, sigma
from cfgdiff.runs import load_for_sampling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run directory or checkpoint")
    ap.add_argument("data", help="held-out dataset file (HDF5 from `cfgdiff prepare`)")
    ap.add_argument("--n", type=int, default=256, help="images")
    ap.add_argument("--lambdas", default="-10,-8,-6,-4,-2,0,2,4", help="log-SNR values")
    args = ap.parse_args()
    model = load_for_sampling(args.run)
    n = min(args.n, dataset_info(args.data).count)
    x = torch.from_numpy(read_images(args.data, 0, n)).permute(0, 3, 1, 2).float() / 127.5 - 1
    labels = torch.from_numpy(read_labels(args.data)[:n])
    eps_fn = network_eps(model.net, model.diffusion_cfg)
    g = torch.Generator().manual_seed(0)
    print(f"{model.path}, {n} images of {args.data}")
    print("   λ   E‖ε̂−ε‖²   of it: image means   e^λ·Var(x)")
    for lam_value in (float(v) for v in args.lambdas.split(",")):
        lam = torch.full((n,), lam_value)
        eps = torch.randn(x.shape, generator=g)
        z = alpha(lam)[:, None, None, None] * x + sigma(lam)[:, None, None, None] * eps  # Eq. 1
        with torch.no_grad():
            err = eps_fn(z, lam, labels) - eps
        means = err.mean(dim=(2, 3))
        ideal = torch.exp(torch.tensor(lam_value)) * x.var()
        print(f"{lam_value:5.0f}  {err.pow(2).mean():9.5f}  {means.pow(2).mean():19.5f}  {ideal:11.5f}")


if __name__ == "__main__":
    main()
