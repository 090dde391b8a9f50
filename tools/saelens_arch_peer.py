"""The peer for tools/speed --arch: SAELens's own training SAE of one architecture (its
loss, AuxK where it has one, its init) trained on CPU with Adam on the same shards as
saeforge, the way ../shared/peer/saelens_peer.py trains its TopK SAE (which tools/speed
still runs for topk), and its steady speed reported.

usage: saelens_arch_peer.py SHARD_DIR TENSOR ARCH D_SAE K BATCH STEPS [--threads N]
       [--widths W1,W2,...] [--coefficient C]
ARCH: batchtopk, jumprelu, relu or matryoshka (SAELens's BatchTopKTrainingSAE,
JumpReLUTrainingSAE, StandardTrainingSAE, MatryoshkaBatchTopKTrainingSAE). K is the codes
per row of the top-k architectures and is not read by jumprelu and relu, whose sparsity
coefficient (l0_coefficient, l1_coefficient) is --coefficient (default 1.0). Prints one JSON
line: tokens_per_s (steady state, after the 5th step), explained variance and L0 on the
first 2000 rows (held out).
"""
import argparse
import glob
import json
import time

import numpy as np
import torch
from safetensors.numpy import load_file
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("tensor")
ap.add_argument("arch", choices=["batchtopk", "jumprelu", "relu", "matryoshka"])
ap.add_argument("d_sae", type=int)
ap.add_argument("k", type=int)
ap.add_argument("batch", type=int)
ap.add_argument("steps", type=int)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--widths", help="matryoshka: the nested widths (default d_sae/16, d_sae/4, d_sae)")
ap.add_argument("--coefficient", type=float, default=1.0, help="jumprelu / relu: the sparsity coefficient")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
parts = [load_file(f)[a.tensor].astype(np.float32) for f in sorted(glob.glob(a.dir + "/*.safetensors"))]
X = np.concatenate([p.reshape(-1, p.shape[-1]) for p in parts])
hold, X = X[:2000], X[2000:]
d = X.shape[1]
if a.arch == "batchtopk":
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d, d_sae=a.d_sae, k=a.k, aux_loss_coefficient=1.0 / 32))
elif a.arch == "matryoshka":
    widths = [int(w) for w in a.widths.split(",")] if a.widths else [a.d_sae // 16, a.d_sae // 4, a.d_sae]
    sae = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=d, d_sae=a.d_sae, k=a.k, aux_loss_coefficient=1.0 / 32, matryoshka_widths=widths))
elif a.arch == "jumprelu":
    sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=d, d_sae=a.d_sae, l0_coefficient=a.coefficient))
else:
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d, d_sae=a.d_sae, l1_coefficient=a.coefficient))
coefficients = {name: c if isinstance(c, float) else c.value for name, c in sae.get_coefficients().items()}
opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (a.d_sae / 16384) ** 0.5, betas=(0.9, 0.999))
rng = np.random.default_rng(0)
since = torch.zeros(a.d_sae)
t_start = None
for step in range(a.steps):
    if step == 5:
        t_start = time.time()
    x = torch.from_numpy(X[rng.integers(0, len(X), a.batch)])
    dead = since * a.batch > min(10_000_000, a.steps * a.batch // 4)
    out = sae.training_forward_pass(TrainStepInput(
        sae_in=x, coefficients=coefficients, dead_neuron_mask=dead, n_training_steps=step,
        is_logging_step=False))
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        fired = (out.feature_acts > 0).any(0)
        since = torch.where(fired, torch.zeros_like(since), since + 1)
elapsed = time.time() - t_start
with torch.no_grad():
    h = torch.from_numpy(hold)
    z = sae.encode(h)
    xh = sae.decode(z)
    ev = 1 - ((h - xh) ** 2).sum() / ((h - h.mean(0)) ** 2).sum()
    l0 = (z > 0).float().sum(1).mean()
print(json.dumps({"peer": type(sae).__name__, "tokens_per_s": (a.steps - 5) * a.batch / elapsed,
                  "explained_variance": float(ev), "l0": float(l0)}))
