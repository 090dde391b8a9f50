"""Load a saeforge transcoder export with SAELens (SAE.load_from_disk) and write its codes
and outputs on the given input rows.

usage: saelens_transcoder.py FOLDER INPUT.safetensors OUT.safetensors
INPUT holds "x" (rows, d_in); OUT gets "z" (rows, d_sae) and "y" (rows, d_out).

SAELens has no top-k transcoder; the class registered here for saeforge's
"topk_transcoder" is the one the README gives: SAELens's Transcoder with its TopK
activation (ReLU of the k largest pre-activations).
"""

import sys
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE, Transcoder, TranscoderConfig
from sae_lens.registry import register_sae_class
from sae_lens.saes.topk_sae import TopK


@dataclass
class TopKTranscoderConfig(TranscoderConfig):
    k: int = 32

    @classmethod
    def architecture(cls) -> str:
        return "topk_transcoder"


class TopKTranscoder(Transcoder):
    def get_activation_fn(self):
        return TopK(self.cfg.k)


register_sae_class("topk_transcoder", TopKTranscoder, TopKTranscoderConfig)

folder, inp, out = sys.argv[1:4]
sae = SAE.load_from_disk(folder)
assert isinstance(sae, Transcoder), type(sae)
x = load_file(inp)["x"]
with torch.no_grad():
    z = sae.encode(x)
    y = sae.decode(z)
save_file({"z": z.contiguous(), "y": y.contiguous(), "d_out": torch.tensor([sae.cfg.d_out])}, out)
print(type(sae).__name__, sae.cfg.architecture(), tuple(y.shape))
