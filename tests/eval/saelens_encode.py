"""SAELens's encoding of saeforge's export (tests/eval/peer_export.rs).

usage: saelens_encode.py SAE_DIR SHARD OUT

Loads SAE_DIR with SAE.load_from_disk, encodes every row of SHARD's one tensor, and writes
OUT (safetensors): "codes" [rows, d_sae] = sae.encode(x), "pre" [rows, d_sae] the hidden
pre-activations, and "threshold" [d_sae] (for edge cases at the JumpReLU gate). Prints
the architecture SAELens loaded.
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE

sae_dir, shard, out = sys.argv[1:4]
sae = SAE.load_from_disk(sae_dir, device="cpu")
x = next(iter(load_file(shard).values())).to(torch.float32)
with torch.no_grad():
    codes = sae.encode(x)
    pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
save_file(
    {"codes": codes.contiguous(), "pre": pre.contiguous(),
     "threshold": sae.threshold.detach().contiguous()},
    out,
)
print(type(sae).__name__, sae.cfg.architecture())
