"""Independent numpy reference for saeforge's readers of other trainers' dictionaries.

    python3 numpy_ref.py sparsify DIR SEED [--skip] [--bf16]
    python3 numpy_ref.py gemma DIR SEED [--compressed]

Writes a random SAE in the layout its trainer writes (sparsify: cfg.json and sae.safetensors,
written here by a minimal safetensors writer; Gemma Scope: params.npz by numpy), rows x.npy,
and that trainer's own encoding of them computed in float64 from the stored weights:
codes.npy (rows, n), dense, and xhat.npy (rows, d), the decode (+ x W_skip^T with --skip).
Rows within 1e-3 of an edge of the encoder (sparsify: the k-th and (k+1)-th largest
activations, or the k-th near 0; Gemma Scope: a pre-activation near its threshold) are
redrawn, so float32 rounding cannot flip a selection.
"""
import json
import struct
import sys

import numpy as np

D, N, K, ROWS = 32, 96, 6, 48


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def bf16(a):
    """(raw bytes, the values they hold): float32 rounded to bfloat16, nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    back = (r.astype(np.uint32) << 16).view(np.float32)
    return r.tobytes(), back.astype(np.float64)


def f32(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a.tobytes(), a.astype(np.float64)


def redraw(rng, x, bad):
    for _ in range(1000):
        rows = [r for r in range(len(x)) if bad(x[r])]
        if not rows:
            return x
        x[rows] = rng.standard_normal((len(rows), x.shape[1])).astype(np.float32)
    sys.exit("numpy_ref: could not draw rows clear of the encoder's edges")


def sparsify(out, rng, skip, half):
    store = bf16 if half else f32
    dtype = "BF16" if half else "F32"
    w = {
        "encoder.weight": rng.standard_normal((N, D)) / np.sqrt(D),
        "encoder.bias": rng.standard_normal(N) * 0.1,
        "W_dec": rng.standard_normal((N, D)) / np.sqrt(D),
        "b_dec": rng.standard_normal(D) * 0.3,
    }
    if skip:
        w["W_skip"] = rng.standard_normal((D, D)) * 0.05
    tensors, v = {}, {}
    for name, a in w.items():
        raw, v[name] = store(a)
        tensors[name] = (dtype, a.shape, raw)
    save_safetensors(f"{out}/sae.safetensors", tensors)
    cfg = {"activation": "topk", "expansion_factor": N // D, "normalize_decoder": True,
           "num_latents": N, "k": K, "multi_topk": False, "skip_connection": skip,
           "transcode": False, "d_in": D}
    with open(f"{out}/cfg.json", "w") as f:
        json.dump(cfg, f)

    def acts(x):  # sparsify's encode: relu(linear(x - b_dec)), top-k
        return np.maximum((x - v["b_dec"]) @ v["encoder.weight"].T + v["encoder.bias"], 0.0)

    def bad(row):
        a = np.sort(acts(row.astype(np.float64)))[::-1]
        return a[K - 1] < 1e-3 or a[K - 1] - a[K] < 1e-3

    x = redraw(rng, rng.standard_normal((ROWS, D)).astype(np.float32), bad)
    a = acts(x.astype(np.float64))
    codes = np.zeros_like(a)
    top = np.argsort(-a, axis=1)[:, :K]
    np.put_along_axis(codes, top, np.take_along_axis(a, top, axis=1), axis=1)
    xhat = codes @ v["W_dec"] + v["b_dec"]
    if skip:
        xhat += x.astype(np.float64) @ v["W_skip"].T
    return x, codes, xhat


def gemma(out, rng, compressed):
    w = {
        "W_enc": (rng.standard_normal((D, N)) / np.sqrt(D)).astype(np.float32),
        "W_dec": (rng.standard_normal((N, D)) / np.sqrt(D)).astype(np.float32),
        "b_enc": (rng.standard_normal(N) * 0.1).astype(np.float32),
        "b_dec": (rng.standard_normal(D) * 0.3).astype(np.float32),
        "threshold": rng.uniform(0.2, 0.8, N).astype(np.float32),
    }
    (np.savez_compressed if compressed else np.savez)(f"{out}/params.npz", **w)
    v = {k: a.astype(np.float64) for k, a in w.items()}

    def pre(x):  # Gemma Scope's encode: x W_enc + b_enc, no b_dec subtracted
        return x @ v["W_enc"] + v["b_enc"]

    def bad(row):
        return np.any(np.abs(pre(row.astype(np.float64)) - v["threshold"]) < 1e-3)

    x = redraw(rng, rng.standard_normal((ROWS, D)).astype(np.float32), bad)
    p = pre(x.astype(np.float64))
    codes = np.where(p > v["threshold"], np.maximum(p, 0.0), 0.0)
    return x, codes, codes @ v["W_dec"] + v["b_dec"]


def main():
    kind, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flags = set(sys.argv[4:])
    rng = np.random.default_rng(seed)
    if kind == "sparsify":
        x, codes, xhat = sparsify(out, rng, "--skip" in flags, "--bf16" in flags)
    else:
        x, codes, xhat = gemma(out, rng, "--compressed" in flags)
    np.save(f"{out}/x.npy", x.astype(np.float32))
    np.save(f"{out}/codes.npy", codes.astype(np.float32))
    np.save(f"{out}/xhat.npy", xhat.astype(np.float32))


if __name__ == "__main__":
    main()
