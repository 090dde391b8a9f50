//! The bad activation shards, each run through every command of `SHARD_COMMANDS`.

use std::path::Path;

use super::p;
use crate::fx::{self, f32_bytes, randn};

/// A bad shard: what to make in `dir` (returns the `{in}` argument), words the error must
/// hold, and whether only a command that reads rows can find it.
pub struct BadShard {
    pub name: &'static str,
    pub make: fn(&Path) -> String,
    pub expect: &'static [&'static str],
    pub streaming: bool,
}

fn good_bytes() -> Vec<u8> {
    fx::st_bytes(
        &[("x", "F32", vec![16, 8], f32_bytes(&randn(128, 3)))],
        None,
    )
}

pub const BAD_SHARDS: &[BadShard] = &[
    BadShard {
        name: "missing_path",
        make: |d| p(d, "nope.safetensors"),
        expect: &["nope.safetensors", "no such file"],
        streaming: false,
    },
    BadShard {
        name: "empty_folder",
        make: |d| {
            std::fs::create_dir(d.join("empty")).unwrap();
            p(d, "empty")
        },
        expect: &["empty", "holds no *.safetensors"],
        streaming: false,
    },
    BadShard {
        name: "glob_matches_nothing",
        make: |d| p(d, "*.nothing"),
        expect: &["*.nothing", "glob matches no files"],
        streaming: false,
    },
    BadShard {
        name: "glob_matches_only_truth",
        make: |d| {
            std::fs::write(d.join("truth.safetensors"), good_bytes()).unwrap();
            p(d, "tru*.safetensors")
        },
        expect: &[
            "tru*.safetensors",
            "glob matches only",
            "truth.safetensors",
            "never reads",
        ],
        streaming: false,
    },
    BadShard {
        name: "empty_file",
        make: |d| {
            std::fs::write(d.join("e.safetensors"), b"").unwrap();
            p(d, "e.safetensors")
        },
        expect: &["e.safetensors", "not a safetensors file (0 bytes"],
        streaming: false,
    },
    BadShard {
        name: "not_safetensors",
        make: |d| {
            std::fs::write(d.join("t.safetensors"), b"time,value\n0,1.5\n1,2.5\n").unwrap();
            p(d, "t.safetensors")
        },
        expect: &["t.safetensors", "not a safetensors file"],
        streaming: false,
    },
    BadShard {
        name: "truncated_data",
        make: |d| {
            let b = good_bytes();
            std::fs::write(d.join("t.safetensors"), &b[..b.len() - 100]).unwrap();
            p(d, "t.safetensors")
        },
        expect: &["t.safetensors", "truncated: the header describes"],
        streaming: false,
    },
    BadShard {
        name: "truncated_header",
        make: |d| {
            std::fs::write(d.join("t.safetensors"), &good_bytes()[..40]).unwrap();
            p(d, "t.safetensors")
        },
        expect: &["t.safetensors", "truncated or not a safetensors file"],
        streaming: false,
    },
    BadShard {
        name: "trailing_bytes",
        make: |d| {
            let mut b = good_bytes();
            b.extend_from_slice(&[0u8; 24]);
            std::fs::write(d.join("t.safetensors"), b).unwrap();
            p(d, "t.safetensors")
        },
        expect: &[
            "t.safetensors",
            "header offsets don't match the file: 24 bytes",
        ],
        streaming: false,
    },
    BadShard {
        name: "offsets_disagree_with_shape",
        make: |d| {
            let h = r#"{"x":{"dtype":"F32","shape":[16,8],"data_offsets":[0,500]}}"#;
            std::fs::write(d.join("t.safetensors"), fx::raw(h, &[0u8; 500])).unwrap();
            p(d, "t.safetensors")
        },
        expect: &[
            "t.safetensors",
            "tensor \"x\" spans bytes 0..500",
            "needs 512",
        ],
        streaming: false,
    },
    BadShard {
        name: "offsets_with_gap",
        make: |d| {
            let h = r#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"x":{"dtype":"F32","shape":[16,8],"data_offsets":[20,532]}}"#;
            std::fs::write(d.join("t.safetensors"), fx::raw(h, &[0u8; 532])).unwrap();
            p(d, "t.safetensors")
        },
        expect: &["t.safetensors", "header offsets don't match the data"],
        streaming: false,
    },
    BadShard {
        name: "header_not_json",
        make: |d| {
            std::fs::write(d.join("t.safetensors"), fx::raw("{\"x\": [1, 2", &[])).unwrap();
            p(d, "t.safetensors")
        },
        expect: &["t.safetensors", "header is not the expected JSON"],
        streaming: false,
    },
    BadShard {
        name: "integer_dtype",
        make: |d| {
            fx::write(
                &d.join("i.safetensors"),
                &[("x", "I32", vec![16, 8], vec![0u8; 512])],
            );
            p(d, "i.safetensors")
        },
        expect: &["i.safetensors", "dtype I32", "expected F32, F16 or BF16"],
        streaming: false,
    },
    BadShard {
        name: "f64_dtype",
        make: |d| {
            fx::write(
                &d.join("f.safetensors"),
                &[("x", "F64", vec![16, 8], vec![0u8; 1024])],
            );
            p(d, "f.safetensors")
        },
        expect: &["f.safetensors", "dtype F64", "expected F32, F16 or BF16"],
        streaming: false,
    },
    BadShard {
        name: "rank_1",
        make: |d| {
            fx::write(
                &d.join("r.safetensors"),
                &[("x", "F32", vec![128], vec![0u8; 512])],
            );
            p(d, "r.safetensors")
        },
        expect: &[
            "r.safetensors",
            "rank 1",
            "expected [tokens, d] or [batch, seq, d]",
        ],
        streaming: false,
    },
    BadShard {
        name: "rank_4",
        make: |d| {
            fx::write(
                &d.join("r.safetensors"),
                &[("x", "F32", vec![2, 2, 4, 8], vec![0u8; 512])],
            );
            p(d, "r.safetensors")
        },
        expect: &[
            "r.safetensors",
            "rank 4",
            "expected [tokens, d] or [batch, seq, d]",
        ],
        streaming: false,
    },
    BadShard {
        name: "two_floats_no_tensor_flag",
        make: |d| {
            let v = f32_bytes(&randn(128, 4));
            fx::write(
                &d.join("two.safetensors"),
                &[
                    ("resid", "F32", vec![16, 8], v.clone()),
                    ("mlp_out", "F32", vec![16, 8], v),
                ],
            );
            p(d, "two.safetensors")
        },
        expect: &[
            "two.safetensors",
            "2 floating tensors (mlp_out, resid)",
            "--tensor",
        ],
        streaming: false,
    },
    BadShard {
        name: "tensor_flag_names_missing_tensor",
        make: |d| format!("{} --tensor nope", p(d, "good.safetensors")),
        expect: &[
            "good.safetensors",
            "--tensor \"nope\" not found (tensors: x)",
        ],
        streaming: false,
    },
    BadShard {
        name: "shards_with_different_d",
        make: |d| {
            let m = d.join("mixed");
            std::fs::create_dir(&m).unwrap();
            fx::shard(&m.join("a.safetensors"), 16, 8, 5);
            fx::shard(&m.join("b.safetensors"), 16, 4, 6);
            p(d, "mixed")
        },
        expect: &["b.safetensors", "d = 4", "d = 8", "all shards must share d"],
        streaming: false,
    },
    BadShard {
        // A panic before ("path contains invalid UTF-8 characters"): shard paths go into
        // JSON (checkpoints, reports).
        name: "non_utf8_file_name_in_folder",
        make: |d| {
            use std::os::unix::ffi::OsStrExt;
            let f = d.join("acts");
            std::fs::create_dir(&f).unwrap();
            let name = std::ffi::OsStr::from_bytes(b"sh\xffard.safetensors");
            fx::shard(&f.join(name), 64, 8, 2);
            p(d, "acts")
        },
        expect: &[
            "acts/sh",
            "ard.safetensors: the file name is not valid UTF-8",
        ],
        streaming: false,
    },
    BadShard {
        name: "zero_rows",
        make: |d| {
            fx::write(
                &d.join("z.safetensors"),
                &[("x", "F32", vec![0, 8], vec![])],
            );
            p(d, "z.safetensors")
        },
        expect: &["z.safetensors", "zero rows"],
        streaming: false,
    },
    BadShard {
        name: "zero_d",
        make: |d| {
            fx::write(
                &d.join("z.safetensors"),
                &[("x", "F32", vec![16, 0], vec![])],
            );
            p(d, "z.safetensors")
        },
        expect: &["z.safetensors", "d = 0"],
        streaming: false,
    },
    BadShard {
        name: "nan_value",
        make: |d| {
            let mut v = randn(128, 7);
            v[5 * 8 + 3] = f32::NAN;
            fx::write(
                &d.join("n.safetensors"),
                &[("x", "F32", vec![16, 8], f32_bytes(&v))],
            );
            p(d, "n.safetensors")
        },
        expect: &["n.safetensors", "row 5 column 3 is NaN", "--skip-nonfinite"],
        streaming: true,
    },
    BadShard {
        name: "inf_value",
        make: |d| {
            let mut v = randn(128, 8);
            v[9 * 8] = f32::NEG_INFINITY;
            fx::write(
                &d.join("n.safetensors"),
                &[("x", "F32", vec![16, 8], f32_bytes(&v))],
            );
            p(d, "n.safetensors")
        },
        expect: &["n.safetensors", "row 9 column 0 is -inf"],
        streaming: true,
    },
    BadShard {
        name: "nan_in_bf16_sequence_shard",
        make: |d| {
            // [batch 2, seq 8, d 8] bf16; NaN at sequence 1, position 2 (row 10).
            let mut v: Vec<u8> = Vec::new();
            for i in 0..128 {
                let x = if i == 10 * 8 + 1 {
                    f32::NAN
                } else {
                    (i % 7) as f32
                };
                v.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes());
            }
            fx::write(
                &d.join("s.safetensors"),
                &[("acts", "BF16", vec![2, 8, 8], v)],
            );
            p(d, "s.safetensors")
        },
        expect: &[
            "s.safetensors",
            "row 10 (sequence 1, position 2) column 1 is NaN",
        ],
        streaming: true,
    },
];
