//! The bad SAE folders, each run through every command of `SAE_COMMANDS`.

use std::path::Path;

use super::p;
use crate::fx::{self, f32_bytes, randn};

/// A bad SAE folder: what to make (returns the `{sae}` argument) and the words expected.
pub struct BadSae {
    pub name: &'static str,
    pub make: fn(&Path) -> String,
    pub expect: &'static [&'static str],
}

fn sae_with(dir: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> String {
    let s = dir.join("bad_sae");
    fx::cfg(&s, 8, 16, "topk", 4);
    fx::write(&s.join("sae_weights.safetensors"), tensors);
    s.display().to_string()
}

/// One .npy array (version 1.0, little-endian f32, C order) of `shape` with `data` after
/// its header, however many bytes that is.
fn npy(shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let tuple = match &dims[..] {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A Gemma Scope folder (params.npz, members stored) of d 8, d_sae 16 whose W_enc member
/// holds 300 of the 512 bytes its shape needs.
fn gemma_truncated(d: &Path) -> String {
    use std::io::Write;
    let s = d.join("gemma");
    std::fs::create_dir(&s).unwrap();
    let f = std::fs::File::create(s.join("params.npz")).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opt =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let arrays: [(&str, &[usize]); 5] = [
        ("W_enc", &[8, 16]),
        ("W_dec", &[16, 8]),
        ("b_enc", &[16]),
        ("b_dec", &[8]),
        ("threshold", &[16]),
    ];
    for (name, shape) in arrays {
        let mut bytes = f32_bytes(&randn(shape.iter().product(), 3));
        if name == "W_enc" {
            bytes.truncate(300);
        }
        z.start_file(format!("{name}.npy"), opt).unwrap();
        z.write_all(&npy(shape, &bytes)).unwrap();
    }
    z.finish().unwrap();
    s.display().to_string()
}

/// A good topk SAE whose cfg.json has `key` set to `value` (a JSON value).
fn cfg_with(d: &Path, key: &str, value: &str) -> String {
    let s = sae_with(d, &fx::sae_tensors(8, 16));
    let cfg = Path::new(&s).join("cfg.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v[key] = serde_json::from_str(value).unwrap();
    std::fs::write(&cfg, v.to_string()).unwrap();
    s
}

pub const BAD_SAES: &[BadSae] = &[
    BadSae {
        name: "missing_folder",
        make: |d| p(d, "no_sae"),
        expect: &["no_sae", "no such"],
    },
    BadSae {
        name: "empty_folder",
        make: |d| {
            std::fs::create_dir(d.join("empty_sae")).unwrap();
            p(d, "empty_sae")
        },
        expect: &["empty_sae", "cfg.json"],
    },
    BadSae {
        name: "weights_without_cfg",
        make: |d| {
            let s = d.join("bad_sae");
            std::fs::create_dir(&s).unwrap();
            fx::write(&s.join("sae_weights.safetensors"), &fx::sae_tensors(8, 16));
            s.display().to_string()
        },
        expect: &["bad_sae", "not an SAE folder (no cfg.json"],
    },
    BadSae {
        name: "cfg_without_weights",
        make: |d| {
            let s = d.join("bad_sae");
            fx::cfg(&s, 8, 16, "topk", 4);
            s.display().to_string()
        },
        expect: &["bad_sae", "no sae_weights.safetensors"],
    },
    BadSae {
        name: "cfg_not_json",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            std::fs::write(Path::new(&s).join("cfg.json"), "d_in: 8\n").unwrap();
            s
        },
        expect: &["cfg.json", "not valid JSON"],
    },
    BadSae {
        name: "cfg_without_d_in",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            std::fs::write(
                Path::new(&s).join("cfg.json"),
                r#"{"architecture": "topk", "d_sae": 16, "k": 4}"#,
            )
            .unwrap();
            s
        },
        expect: &["cfg.json", "missing or non-integer \"d_in\""],
    },
    BadSae {
        name: "missing_tensor",
        make: |d| {
            let mut t = fx::sae_tensors(8, 16);
            t.retain(|x| x.0 != "b_dec");
            sae_with(d, &t)
        },
        expect: &["sae_weights.safetensors", "missing tensor \"b_dec\" [8]"],
    },
    BadSae {
        name: "extra_tensor",
        make: |d| {
            let mut t = fx::sae_tensors(8, 16);
            t.push(("W_extra", "F32", vec![2], vec![0u8; 8]));
            sae_with(d, &t)
        },
        expect: &[
            "sae_weights.safetensors",
            "unexpected tensor \"W_extra\" for a topk SAE",
        ],
    },
    BadSae {
        name: "wrong_shape",
        make: |d| {
            let mut t = fx::sae_tensors(8, 16);
            t[0].2 = vec![16, 8];
            sae_with(d, &t)
        },
        expect: &[
            "sae_weights.safetensors",
            "tensor \"W_enc\" has shape [16, 8]",
            "needs [8, 16]",
        ],
    },
    BadSae {
        name: "cfg_disagrees_with_weights",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            fx::cfg(Path::new(&s), 8, 32, "topk", 4);
            s
        },
        expect: &[
            "sae_weights.safetensors",
            "has shape [8, 16]; cfg.json (d_in 8, d_sae 32) needs [8, 32]",
        ],
    },
    BadSae {
        name: "k_larger_than_d_sae",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            fx::cfg(Path::new(&s), 8, 16, "topk", 99);
            s
        },
        expect: &["cfg.json", "\"k\" = 99: expected 1 ..= d_sae (16)"],
    },
    BadSae {
        name: "unsupported_architecture",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            fx::cfg(Path::new(&s), 8, 16, "gated", 4);
            s
        },
        expect: &["cfg.json", "architecture \"gated\" is not supported"],
    },
    BadSae {
        // Read as "standard" before: a topk SAE encoded as a ReLU one, without a word.
        name: "architecture_not_a_string",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            std::fs::write(
                Path::new(&s).join("cfg.json"),
                r#"{"architecture": 3, "d_in": 8, "d_sae": 16, "k": 4}"#,
            )
            .unwrap();
            s
        },
        expect: &["cfg.json", "\"architecture\" = 3: expected a string"],
    },
    BadSae {
        // Read as "none" before: the scaling silently dropped.
        name: "normalize_activations_not_a_string",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            std::fs::write(
                Path::new(&s).join("cfg.json"),
                r#"{"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 4, "normalize_activations": {"scale": 2.0}}"#,
            )
            .unwrap();
            s
        },
        expect: &[
            "cfg.json",
            "\"normalize_activations\" = {\"scale\":2.0}: expected a string",
        ],
    },
    BadSae {
        name: "nan_in_weights",
        make: |d| {
            let mut t = fx::sae_tensors(8, 16);
            let mut v = randn(16, 9);
            v[7] = f32::NAN;
            t[2].3 = f32_bytes(&v);
            sae_with(d, &t)
        },
        expect: &[
            "sae_weights.safetensors",
            "tensor \"b_enc\" element 7 is NaN",
        ],
    },
    BadSae {
        name: "truncated_weights",
        make: |d| {
            let s = sae_with(d, &fx::sae_tensors(8, 16));
            let w = Path::new(&s).join("sae_weights.safetensors");
            let b = std::fs::read(&w).unwrap();
            std::fs::write(&w, &b[..b.len() / 2]).unwrap();
            s
        },
        expect: &["sae_weights.safetensors", "truncated"],
    },
    BadSae {
        name: "integer_weights",
        make: |d| {
            let mut t = fx::sae_tensors(8, 16);
            t[3].1 = "I32";
            sae_with(d, &t)
        },
        expect: &["sae_weights.safetensors", "\"b_dec\" has dtype I32"],
    },
    BadSae {
        // "failed to fill whole buffer" before.
        name: "gemma_scope_truncated_array",
        make: gemma_truncated,
        expect: &[
            "params.npz",
            "array \"W_enc\" is truncated: shape [8, 16] of <f4 needs 512 bytes of data, the archive holds 300",
        ],
    },
    BadSae {
        // Not compared with the weights before.
        name: "cfg_dtype_not_the_weights",
        make: |d| cfg_with(d, "dtype", "\"float16\""),
        expect: &[
            "sae_weights.safetensors",
            "tensor \"W_dec\" has dtype F32, but cfg.json says dtype \"float16\" (F16)",
        ],
    },
    BadSae {
        name: "cfg_dtype_unknown",
        make: |d| cfg_with(d, "dtype", "\"float64\""),
        expect: &[
            "cfg.json",
            "dtype \"float64\" is not supported (expected float32, float16 or bfloat16)",
        ],
    },
    BadSae {
        // Ignored before: the SAE then encoded rows it was not trained on.
        name: "cfg_reshape_hook_z",
        make: |d| cfg_with(d, "reshape_activations", "\"hook_z\""),
        expect: &[
            "cfg.json",
            "reshape_activations \"hook_z\" is not supported",
        ],
    },
];
