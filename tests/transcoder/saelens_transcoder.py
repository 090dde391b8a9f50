"""Load a saeforge transcoder export with SAELens (SAE.load_from_disk) and write its codes
and outputs on the given input rows; or write a SAELens transcoder of its own.

usage: saelens_transcoder.py FOLDER INPUT.safetensors OUT.safetensors
INPUT holds "x" (rows, d_in); OUT gets "z" (rows, d_sae) and "y" (rows, d_out).

usage: saelens_transcoder.py make ARCH D_IN D_OUT D_SAE SEED FOLDER
writes a SAELens Transcoder (ARCH transcoder) or JumpReLUTranscoder (jumprelu_transcoder)
with random weights through SAELens's own save_model.

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

if sys.argv[1] == "make":
    from sae_lens import JumpReLUTranscoder, JumpReLUTranscoderConfig

    arch, d_in, d_out, d_sae, seed, folder = sys.argv[2:8]
    d_in, d_out, d_sae = int(d_in), int(d_out), int(d_sae)
    torch.manual_seed(int(seed))
    if arch == "transcoder":
        sae = Transcoder(TranscoderConfig(d_in=d_in, d_out=d_out, d_sae=d_sae, apply_b_dec_to_input=False))
    else:
        sae = JumpReLUTranscoder(JumpReLUTranscoderConfig(d_in=d_in, d_out=d_out, d_sae=d_sae, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae) * 0.3)
        sae.b_enc.copy_(torch.randn(d_sae) * 0.1)
        sae.W_dec.copy_(torch.randn(d_sae, d_out) * 0.3)
        sae.b_dec.copy_(torch.randn(d_out))
        if arch != "transcoder":
            sae.threshold.copy_(torch.rand(d_sae) * 0.5)
    sae.save_model(folder)
    sys.exit(0)

folder, inp, out = sys.argv[1:4]
sae = SAE.load_from_disk(folder)
assert isinstance(sae, Transcoder), type(sae)
x = load_file(inp)["x"]
with torch.no_grad():
    z = sae.encode(x)
    y = sae.decode(z)
save_file({"z": z.contiguous(), "y": y.contiguous(), "d_out": torch.tensor([sae.cfg.d_out])}, out)
print(type(sae).__name__, sae.cfg.architecture(), tuple(y.shape))
