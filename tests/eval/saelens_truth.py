"""SAELens's own evaluator on a saeforge synth world, for tests/eval/peer.rs.

usage: saelens_truth.py SAE_DIR DATA_DIR ROWS BATCH
Scores the SAE folder with sae_lens.synthetic.evals.eval_sae_on_synthetic_data on the first
ROWS rows of DATA_DIR: the feature dictionary is DATA_DIR/truth.safetensors (features, bias)
and the "activation generator" replays the true codes saeforge wrote (DATA_DIR/codes/, CSR),
shard by shard in sorted order, so both evaluators see the same rows. Prints one JSON line.
"""
import glob
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file
from sae_lens import SAE
from sae_lens.synthetic.evals import eval_sae_on_synthetic_data
from sae_lens.synthetic.feature_dictionary import FeatureDictionary

sae_dir, data, rows, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
truth = load_file(os.path.join(data, "truth.safetensors"))
features = torch.from_numpy(truth["features"])
n, d = features.shape
fd = FeatureDictionary(n, d, bias=False, initializer=None)
fd.feature_vectors.data = features
if "bias" in truth:
    fd.bias.data = torch.from_numpy(truth["bias"])

ptr, idx, val = [0], [], []
for f in sorted(glob.glob(os.path.join(data, "codes", "shard-*.safetensors"))):
    c = load_file(f)
    ptr.extend((c["indptr"][1:] + ptr[-1]).tolist())
    idx.append(c["indices"])
    val.append(c["values"])
ptr, idx, val = np.array(ptr), np.concatenate(idx), np.concatenate(val)


class Replay:
    """The true codes of the rows, in order, as dense (batch, n) tensors."""

    def __init__(self):
        self.row = 0

    def sample(self, b):
        out = torch.zeros(b, n)
        for r in range(b):
            a, e = ptr[self.row + r], ptr[self.row + r + 1]
            out[r, torch.from_numpy(idx[a:e])] = torch.from_numpy(val[a:e])
        self.row += b
        return out


sae = SAE.load_from_disk(sae_dir, device="cpu")
r = eval_sae_on_synthetic_data(sae, fd, Replay(), num_samples=rows, batch_size=batch).to_dict()
c = r["classification"]
print(json.dumps({
    "mcc": r["mcc"], "uniqueness": r["uniqueness"], "precision": c["precision"],
    "recall": c["recall"], "f1": c["f1_score"], "accuracy": c["accuracy"],
    "explained_variance": r["explained_variance"], "l0": r["sae_l0"], "true_l0": r["true_l0"],
    "dead": r["dead_latents"], "shrinkage": r["shrinkage"],
}))
