#!/usr/bin/env python3
"""Convert a dictionary_learning checkpoint (ae.pt, a torch state dict) to the SAELens layout
saeforge reads (cfg.json + sae_weights.safetensors).

    python3 tools/dl2saelens.py path/to/ae.pt OUT [--as topk|batchtopk]

saeforge does not unpickle torch files (a pickle runs code); this script does, with
torch.load(weights_only=True), so it needs torch. The class is read from config.json beside
ae.pt (trainer.dict_class) or, for the two classes with the same tensors, from --as:

| dict_class | tensors | written as |
|---|---|---|
| AutoEncoder | bias, encoder.weight, encoder.bias, decoder.weight | standard |
| AutoEncoderTopK | k, threshold, encoder.*, decoder.weight, b_dec | topk (k) |
| BatchTopKSAE | the same | jumprelu, every threshold = the learned one (its default encode) |
| JumpReluAutoEncoder | W_enc, b_enc, W_dec, b_dec, threshold | jumprelu, apply_b_dec_to_input false |

Gated and Matryoshka dictionaries are refused.
"""
import json
import os
import struct
import sys

import numpy as np


def die(msg):
    sys.exit(f"dl2saelens: {msg}")


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    args = sys.argv[1:]
    as_kind = None
    if "--as" in args:
        i = args.index("--as")
        if i + 1 >= len(args) or args[i + 1] not in ("topk", "batchtopk"):
            die("--as takes topk or batchtopk")
        as_kind = args[i + 1]
        del args[i : i + 2]
    if len(args) != 2:
        die("usage: dl2saelens.py AE_PT OUT [--as topk|batchtopk]")
    src, out = args
    if os.path.exists(out):
        die(f"{out}: already exists")
    import torch

    sd = {k: v.detach().cpu() for k, v in torch.load(src, map_location="cpu", weights_only=True).items()}
    cls = None
    cfg_path = os.path.join(os.path.dirname(os.path.abspath(src)), "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            cls = json.load(f).get("trainer", {}).get("dict_class")
    keys = set(sd)
    f = lambda k: sd[k].float().numpy()
    kind, extra = None, {}
    if keys == {"bias", "encoder.weight", "encoder.bias", "decoder.weight"}:
        kind = "standard"
        w = {"W_enc": f("encoder.weight").T, "b_enc": f("encoder.bias"),
             "W_dec": f("decoder.weight").T, "b_dec": f("bias")}
    elif keys == {"k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight", "b_dec"}:
        which = as_kind or {"AutoEncoderTopK": "topk", "BatchTopKSAE": "batchtopk"}.get(cls)
        if which is None:
            die(f"{src}: AutoEncoderTopK or BatchTopKSAE (the same tensors); no config.json names the class: say --as topk or --as batchtopk")
        w = {"W_enc": f("encoder.weight").T, "b_enc": f("encoder.bias"),
             "W_dec": f("decoder.weight").T, "b_dec": f("b_dec")}
        if which == "topk":
            kind, extra = "topk", {"k": int(sd["k"])}
        else:
            kind = "jumprelu"
            w["threshold"] = np.full(w["b_enc"].shape, float(sd["threshold"]), dtype=np.float32)
    elif keys == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}:
        kind, extra = "jumprelu", {"apply_b_dec_to_input": False}
        w = {k: f(k) for k in keys}
    else:
        die(f"{src}: tensors {sorted(keys)} are not a dictionary_learning AutoEncoder, AutoEncoderTopK, BatchTopKSAE or JumpReluAutoEncoder (gated and Matryoshka dictionaries are not supported)")
    d, n = w["W_enc"].shape
    cfg = {"architecture": kind, "d_in": int(d), "d_sae": int(n), "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": {"converted_from": f"dictionary_learning {cls or kind}"}}
    cfg.update(extra)
    tmp = out + ".tmp"
    os.makedirs(tmp)
    save_safetensors(os.path.join(tmp, "sae_weights.safetensors"), w)
    with open(os.path.join(tmp, "cfg.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    os.rename(tmp, out)
    print(f"{out}: {kind} SAE, d_in {d}, d_sae {n}, from {src}")


if __name__ == "__main__":
    main()
