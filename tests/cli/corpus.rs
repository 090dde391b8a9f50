//! The bad-input corpus. Every case makes its inputs in a fresh folder, runs the real binary
//! and asserts: the exit code, that stderr is exactly ONE line, starting with "error:",
//! holding the expected words (the file, tensor or flag and what was expected), that
//! nothing panicked, and that the folder is byte for byte as it was (no output left behind,
//! nothing existing overwritten).
//!
//! Three tables: bad shards x every command that reads shards, bad SAE folders x every
//! command that reads an SAE, and single command lines (flags, run folders, configs).
//! A new command is one row in `SHARD_COMMANDS` / `SAE_COMMANDS` (its bad-input coverage
//! then comes for free) plus rows in `LINES` for its own flags.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use crate::fx::{self, f32_bytes, randn};
use crate::{run, snapshot, tmp, trial, words};

/// Commands that read activation shards. `{in}` is the shard argument (it may carry
/// --tensor), `{dir}` the case's folder, which holds good.safetensors (64 x 8 f32) and a
/// good topk SAE in sae/ (d 8, d_sae 16, k 4). `streams`: the command reads rows, so it
/// meets NaN / Inf values too.
const SHARD_COMMANDS: &[(&str, &str, bool)] = &[
    (
        "train",
        "train --data {in} --out {dir}/out --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        true,
    ),
    (
        "train_eval_data",
        "train --data {dir}/good.safetensors --eval-data {in} --out {dir}/out --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        true,
    ),
    ("info", "info {in}", false),
    ("eval", "eval --sae {dir}/sae --data {in}", true),
    (
        "encode",
        "encode --sae {dir}/sae --data {in} --out {dir}/codes.safetensors --device cpu",
        true,
    ),
    (
        "steer",
        "steer --sae {dir}/sae --data {in} --out {dir}/steered --device cpu --ablate 0",
        true,
    ),
];

/// Commands that read an SAE folder `{sae}`.
const SAE_COMMANDS: &[(&str, &str)] = &[
    ("eval", "eval --sae {sae} --data {dir}/good.safetensors"),
    ("info", "info {sae}"),
    (
        "encode",
        "encode --sae {sae} --data {dir}/good.safetensors --out {dir}/codes.safetensors --device cpu",
    ),
    (
        "steer",
        "steer --sae {sae} --data {dir}/good.safetensors --out {dir}/steered.safetensors --device cpu --ablate 0",
    ),
];

/// A bad shard: what to make in `dir` (returns the `{in}` argument), words the error must
/// hold, and whether only a command that reads rows can find it.
struct BadShard {
    name: &'static str,
    make: fn(&Path) -> String,
    expect: &'static [&'static str],
    streaming: bool,
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn good_bytes() -> Vec<u8> {
    fx::st_bytes(
        &[("x", "F32", vec![16, 8], f32_bytes(&randn(128, 3)))],
        None,
    )
}

const BAD_SHARDS: &[BadShard] = &[
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

/// A bad SAE folder: what to make (returns the `{sae}` argument) and the words expected.
struct BadSae {
    name: &'static str,
    make: fn(&Path) -> String,
    expect: &'static [&'static str],
}

fn sae_with(dir: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> String {
    let s = dir.join("bad_sae");
    fx::cfg(&s, 8, 16, "topk", 4);
    fx::write(&s.join("sae_weights.safetensors"), tensors);
    s.display().to_string()
}

const BAD_SAES: &[BadSae] = &[
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
];

/// A single command line: setup, arguments (`{dir}` is the case's folder, which also holds
/// good.safetensors and sae/), expected exit code and words, and whether it needs a GPU.
struct Line {
    name: &'static str,
    setup: fn(&Path),
    args: &'static str,
    code: i32,
    expect: &'static [&'static str],
    gpu: bool,
}

/// The start of a train command line; each case adds the flags it is about.
const TRAIN: &str = "train --data {dir}/good.safetensors --out {dir}/out --device cpu --steps 2";

fn nothing(_: &Path) {}

/// A folder that looks like a finished run (enough for the refusals to trigger).
fn run_folder(d: &Path) {
    let r = d.join("run");
    std::fs::create_dir_all(r.join("checkpoint")).unwrap();
    std::fs::write(r.join("config.json"), "{}").unwrap();
}

const LINES: &[Line] = &[
    Line {
        name: "train_k_zero",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --k 0",
        code: 2,
        expect: &["--k 0: expected a value > 0"],
        gpu: false,
    },
    Line {
        name: "train_k_above_d_sae",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --k 17",
        code: 2,
        expect: &["--k 17: expected at most d_sae = 16"],
        gpu: false,
    },
    Line {
        name: "train_batch_zero",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 0",
        code: 2,
        expect: &["--batch 0: expected a value > 0"],
        gpu: false,
    },
    Line {
        name: "train_negative_lr",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --lr -0.001",
        code: 2,
        expect: &["--lr -0.001: expected a finite value > 0"],
        gpu: false,
    },
    Line {
        name: "train_nan_lr",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --lr NaN",
        code: 2,
        expect: &["--lr NaN: expected a finite number"],
        gpu: false,
    },
    Line {
        name: "train_k_aux_zero",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --k-aux 0",
        code: 2,
        expect: &["--k-aux 0: expected a value > 0"],
        gpu: false,
    },
    Line {
        name: "train_k_anneal_relu",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --arch relu --k-anneal-steps 10",
        code: 2,
        expect: &[
            "--k-anneal-steps 10: only for --arch topk, batchtopk or matryoshka (--arch relu has no k)",
        ],
        gpu: false,
    },
    Line {
        name: "train_matryoshka_widths_last",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --arch matryoshka --matryoshka-widths 4,8",
        code: 2,
        expect: &["--matryoshka-widths 4,8: the last width must be d_sae = 16"],
        gpu: false,
    },
    Line {
        name: "train_matryoshka_widths_order",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --arch matryoshka --matryoshka-widths 8,4,16",
        code: 2,
        expect: &["--matryoshka-widths 8,4,16: expected positive widths, strictly increasing"],
        gpu: false,
    },
    Line {
        name: "train_matryoshka_widths_missing",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --arch matryoshka",
        code: 2,
        expect: &["--matryoshka-widths: missing; --arch matryoshka needs the nested widths"],
        gpu: false,
    },
    Line {
        name: "train_matryoshka_widths_other_arch",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --arch topk --matryoshka-widths 16",
        code: 2,
        expect: &["--matryoshka-widths 16: only for --arch matryoshka"],
        gpu: false,
    },
    Line {
        name: "train_k_anneal_start_below_k",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --k 4 --k-anneal-steps 10 --k-anneal-start 3",
        code: 2,
        expect: &["--k-anneal-start 3: expected at least --k (4)"],
        gpu: false,
    },
    Line {
        name: "train_k_anneal_start_alone",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --k 4 --k-anneal-start 8",
        code: 2,
        expect: &["--k-anneal-start 8: has no effect without --k-anneal-steps"],
        gpu: false,
    },
    Line {
        name: "train_eval_fraction_out_of_range",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --eval-fraction 1.5",
        code: 2,
        expect: &["--eval-fraction 1.5: expected 0 <= f < 1"],
        gpu: false,
    },
    Line {
        name: "train_d_sae_beyond_host_memory",
        setup: nothing,
        args: "{train} --k 4 --batch 16 --d-sae 4000000000000",
        code: 2,
        expect: &[
            "--d-sae 4000000000000 with --batch 16 on the CPU engine needs about",
            "GiB available",
        ],
        gpu: false,
    },
    Line {
        name: "train_d_sae_beyond_adapter",
        setup: nothing,
        args: "train --data {dir}/good.safetensors --out {dir}/out --device gpu --d-sae 2000000000 --k 4 --batch 16 --steps 2",
        code: 2,
        expect: &[
            "--d-sae 2000000000 with --batch 16: W_enc [8, 2000000000] needs",
            "in one storage binding, but adapter",
            "allows",
        ],
        gpu: true,
    },
    Line {
        // batchtopk splits such a batch into chunks of rows but holds all of their
        // pre-activations at once (128 GiB here, beyond the host's memory).
        name: "train_batchtopk_pre_activations_beyond_adapter",
        setup: nothing,
        args: "train --data {dir}/good.safetensors --out {dir}/out --device gpu --arch batchtopk --d-sae 1048576 --k 4 --batch 32768 --steps 2",
        code: 2,
        expect: &[
            "--d-sae 1048576 with --batch 32768: batchtopk holds the pre-activations of every chunk of the batch at once ([32768, 1048576], 131072.0 MiB), more than the",
            "lower --d-sae or --batch, or use --device cpu",
        ],
        gpu: true,
    },
    Line {
        name: "train_without_data",
        setup: nothing,
        args: "train --out {dir}/out --device cpu",
        code: 2,
        expect: &["--data: missing"],
        gpu: false,
    },
    Line {
        name: "train_out_holds_a_run",
        setup: run_folder,
        args: "train --data {dir}/good.safetensors --out {dir}/run --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        code: 2,
        expect: &[
            "--out",
            "run: already holds a run",
            "--overwrite",
            "--resume",
        ],
        gpu: false,
    },
    Line {
        name: "train_out_below_a_file",
        setup: |d| std::fs::write(d.join("notes.txt"), "x").unwrap(),
        args: "train --data {dir}/good.safetensors --out {dir}/notes.txt/run --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
        code: 2,
        expect: &["--out", "notes.txt/run: cannot write the output folder"],
        gpu: false,
    },
    Line {
        name: "train_resume_without_checkpoint",
        setup: |d| std::fs::create_dir(d.join("run")).unwrap(),
        args: "train --resume {dir}/run",
        code: 2,
        expect: &["--resume", "no checkpoint at", "state.safetensors"],
        gpu: false,
    },
    Line {
        name: "train_resume_changing_the_run",
        setup: run_folder,
        args: "train --resume {dir}/run --batch 32",
        code: 2,
        expect: &["--batch cannot be changed on --resume", "run/config.json"],
        gpu: false,
    },
    Line {
        name: "train_resume_with_overwrite",
        setup: run_folder,
        args: "train --resume {dir}/run --overwrite",
        code: 2,
        expect: &["--overwrite cannot be combined with --resume"],
        gpu: false,
    },
    Line {
        name: "train_resume_damaged_checkpoint",
        setup: |d| {
            run_folder(d);
            let b = fx::st_bytes(&fx::sae_tensors(8, 16), Some(r#"{"saeforge":"{}"}"#));
            std::fs::write(
                d.join("run/checkpoint/state.safetensors"),
                &b[..b.len() - 7],
            )
            .unwrap();
        },
        args: "train --resume {dir}/run",
        code: 2,
        expect: &["state.safetensors", "truncated"],
        gpu: false,
    },
    Line {
        name: "train_resume_foreign_checkpoint",
        setup: |d| {
            run_folder(d);
            fx::write(
                &d.join("run/checkpoint/state.safetensors"),
                &fx::sae_tensors(8, 16),
            );
        },
        args: "train --resume {dir}/run",
        code: 2,
        expect: &["state.safetensors", "not a saeforge checkpoint"],
        gpu: false,
    },
    Line {
        name: "train_resume_on_changed_data",
        setup: |d| {
            let o = run(&words(&format!(
                "train --data {0}/good.safetensors --out {0}/run --device cpu --d-sae 16 --k 4 --batch 16 --steps 2",
                d.display()
            )));
            assert_eq!(o.code, Some(0), "{o:?}");
            fx::shard(&d.join("good.safetensors"), 48, 8, 1);
        },
        args: "train --resume {dir}/run --steps 4",
        code: 2,
        expect: &[
            "--resume",
            "the data changed since the checkpoint",
            "good.safetensors was \"x\" F32 [64, 8]",
            "[48, 8]",
        ],
        gpu: false,
    },
    Line {
        name: "train_config_missing",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --config {dir}/missing.toml",
        code: 2,
        expect: &["--config", "missing.toml: no such file"],
        gpu: false,
    },
    Line {
        name: "train_config_unknown_key",
        setup: |d| std::fs::write(d.join("c.toml"), "batchsize = 3\n").unwrap(),
        args: "{train} --d-sae 16 --k 4 --batch 16 --config {dir}/c.toml",
        code: 2,
        expect: &["--config", "c.toml: unknown field `batchsize`"],
        gpu: false,
    },
    Line {
        name: "train_unparsable_value",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --k four",
        code: 2,
        expect: &["invalid value 'four' for '--k <K>'"],
        gpu: false,
    },
    Line {
        name: "train_unknown_flag",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --learning-rate 3",
        code: 2,
        expect: &["unexpected argument '--learning-rate'"],
        gpu: false,
    },
    Line {
        name: "synth_zero_features",
        setup: nothing,
        args: "synth --out {dir}/syn --features 0",
        code: 2,
        expect: &["--features 0: expected at least 1"],
        gpu: false,
    },
    Line {
        name: "synth_bad_magnitude",
        setup: nothing,
        args: "synth --out {dir}/syn --magnitude 1-2",
        code: 2,
        expect: &["--magnitude \"1-2\": expected LO:HI"],
        gpu: false,
    },
    Line {
        name: "synth_out_holds_a_dataset",
        setup: |d| {
            std::fs::create_dir(d.join("syn")).unwrap();
            std::fs::write(d.join("syn/synth.json"), "{}").unwrap();
        },
        args: "synth --out {dir}/syn --tokens 10 --d-in 4 --features 8 --active 1",
        code: 2,
        expect: &["--out", "syn: already holds a dataset", "--overwrite"],
        gpu: false,
    },
    Line {
        name: "synth_shard_beyond_host_memory",
        setup: nothing,
        args: "synth --out {dir}/syn --tokens 100000000000 --shard-tokens 100000000000 --d-in 4096",
        code: 2,
        expect: &["--shard-tokens 100000000000 x --d-in 4096", "GiB available"],
        gpu: false,
    },
    Line {
        name: "eval_nothing_to_do",
        setup: nothing,
        args: "eval --sae {dir}/sae",
        code: 2,
        expect: &["nothing to evaluate", "--data", "--truth"],
        gpu: false,
    },
    Line {
        name: "eval_truth_of_other_d",
        setup: |d| {
            fx::write(
                &d.join("truth.safetensors"),
                &[("features", "F32", vec![6, 4], f32_bytes(&randn(24, 1)))],
            )
        },
        args: "eval --sae {dir}/sae --truth {dir}/truth.safetensors",
        code: 2,
        expect: &["truth.safetensors", "d = 4", "d_in = 8"],
        gpu: false,
    },
    Line {
        name: "eval_json_into_missing_folder",
        setup: nothing,
        args: "eval --sae {dir}/sae --data {dir}/good.safetensors --json {dir}/no/m.json",
        code: 2,
        expect: &["--json", "no/m.json: folder", "does not exist"],
        gpu: false,
    },
    Line {
        name: "eval_data_of_other_d",
        setup: |d| fx::shard(&d.join("d4.safetensors"), 16, 4, 3),
        args: "eval --sae {dir}/sae --data {dir}/d4.safetensors",
        code: 2,
        expect: &["d4.safetensors: d = 4", "d_in = 8"],
        gpu: false,
    },
    Line {
        name: "devices_unknown_flag",
        setup: nothing,
        args: "devices --jsn",
        code: 2,
        expect: &["unexpected argument '--jsn'"],
        gpu: false,
    },
];

/// The common fixtures of a case folder.
fn base(dir: &Path) {
    fx::shard(&dir.join("good.safetensors"), 64, 8, 1);
    fx::sae(&dir.join("sae"), 8, 16, 4);
}

/// Run one case: make, snapshot, run, check everything.
fn check(
    case: &str,
    make: impl FnOnce(&Path) -> String,
    template: &str,
    code: i32,
    expect: &[&str],
) -> Result<(), Failed> {
    let dir = tmp(&format!("corpus-{case}"));
    base(&dir);
    let arg = make(&dir);
    let d = dir.display().to_string();
    let line = template
        .replace("{train}", TRAIN)
        .replace("{in}", &arg)
        .replace("{sae}", &arg)
        .replace("{dir}", &d);
    let before = snapshot(&dir);
    let o = run(&words(&line));
    let after = snapshot(&dir);
    let ctx = || {
        format!(
            "\n  saeforge {line}\n  exit {:?}\n  stderr: {:?}\n  stdout: {:?}",
            o.code, o.stderr, o.stdout
        )
    };
    if o.code != Some(code) {
        return Err(format!("expected exit {code}{}", ctx()).into());
    }
    let lines: Vec<&str> = o.stderr.lines().collect();
    if lines.len() != 1 {
        return Err(format!("expected ONE line on stderr, got {}{}", lines.len(), ctx()).into());
    }
    let l = lines[0];
    if !l.starts_with("error: ") || l.contains("panicked") || l.contains("RUST_BACKTRACE") {
        return Err(format!("expected an `error: ` line and no panic{}", ctx()).into());
    }
    for e in expect {
        let e = e.replace("{dir}", &d);
        if !l.contains(&e) {
            return Err(format!("stderr does not name {e:?}{}", ctx()).into());
        }
    }
    if before != after {
        let changed: Vec<String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| k.display().to_string())
            .collect();
        return Err(format!("files changed or left behind: {changed:?}{}", ctx()).into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for bad in BAD_SHARDS {
        for &(cmd, template, streams) in SHARD_COMMANDS {
            if bad.streaming && !streams {
                continue;
            }
            let (make, expect) = (bad.make, bad.expect);
            let name = format!("corpus::shard::{}::{cmd}", bad.name);
            let case = format!("shard-{}-{cmd}", bad.name);
            t.push(trial(name, false, move || {
                check(&case, make, template, 2, expect)
            }));
        }
    }
    for bad in BAD_SAES {
        for &(cmd, template) in SAE_COMMANDS {
            let (make, expect) = (bad.make, bad.expect);
            let name = format!("corpus::sae::{}::{cmd}", bad.name);
            let case = format!("sae-{}-{cmd}", bad.name);
            t.push(trial(name, false, move || {
                check(&case, make, template, 2, expect)
            }));
        }
    }
    for l in LINES {
        let (setup, args, code, expect) = (l.setup, l.args, l.code, l.expect);
        let name = format!("corpus::line::{}", l.name);
        let case = format!("line-{}", l.name);
        t.push(trial(name, l.gpu, move || {
            check(
                &case,
                |d| {
                    setup(d);
                    String::new()
                },
                args,
                code,
                expect,
            )
        }));
    }
    t.push(print_trial());
    t
}

/// One printed case: its name, what builds its input, and the command template.
type PrintCase = (String, Box<dyn FnOnce(&Path) -> String>, &'static str);

/// Every case of the corpus with the line it produces (for the docs; run with
/// `cargo test --release --test cli -- --ignored corpus::print --nocapture`).
pub fn print_trial() -> Trial {
    Trial::test("corpus::print", || {
        let mut cases: Vec<PrintCase> = Vec::new();
        for bad in BAD_SHARDS {
            let template = SHARD_COMMANDS[0].1;
            cases.push((format!("shard {}", bad.name), Box::new(bad.make), template));
        }
        for bad in BAD_SAES {
            cases.push((
                format!("sae {}", bad.name),
                Box::new(bad.make),
                SAE_COMMANDS[0].1,
            ));
        }
        for l in LINES {
            let setup = l.setup;
            cases.push((
                format!("line {}", l.name),
                Box::new(move |d: &Path| {
                    setup(d);
                    String::new()
                }),
                l.args,
            ));
        }
        for (name, make, template) in cases {
            let dir = tmp(&format!("print-{}", name.replace(' ', "-")));
            base(&dir);
            let arg = make(&dir);
            let d = dir.display().to_string();
            let line = template
                .replace("{train}", TRAIN)
                .replace("{in}", &arg)
                .replace("{sae}", &arg)
                .replace("{dir}", &d);
            let o = run(&words(&line));
            println!(
                "{name} | exit {:?} | {}",
                o.code,
                o.stderr.trim().replace(&d, "DIR")
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    })
    .with_ignored_flag(true)
}
