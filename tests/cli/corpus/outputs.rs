//! Single bad command lines about outputs: the files and folders `encode`, `steer`, `eval`,
//! `toy` and `convert` write (checked before any work), and their batch memory.

use super::lines::Line;

fn nothing(_: &std::path::Path) {}

pub const OUTPUT_LINES: &[Line] = &[
    Line {
        // Wrote the codes over the SAE's weights before (exit 0).
        name: "encode_out_is_the_sae_weights",
        setup: nothing,
        args: "encode --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/sae/sae_weights.safetensors --device cpu",
        code: 2,
        expect: &["--out", "sae/sae_weights.safetensors: is a file of the SAE"],
        gpu: false,
    },
    Line {
        name: "steer_out_is_the_sae_cfg",
        setup: nothing,
        args: "steer --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/sae/cfg.json --device cpu --ablate 0",
        code: 2,
        expect: &["--out", "sae/cfg.json: is a file of the SAE"],
        gpu: false,
    },
    Line {
        // Exit 1 with "Is a directory (os error 21)" after encoding every row before.
        name: "encode_out_is_a_folder",
        setup: nothing,
        args: "encode --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/sae --device cpu",
        code: 2,
        expect: &["--out", "/sae: is a folder, expected a file name"],
        gpu: false,
    },
    Line {
        name: "steer_out_in_a_missing_folder",
        setup: nothing,
        args: "steer --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/no/x.safetensors --device cpu --ablate 0",
        code: 2,
        expect: &["--out", "no/x.safetensors: folder", "/no does not exist"],
        gpu: false,
    },
    Line {
        // Exit 1 after writing the steered file before: the output was left, the report not.
        name: "steer_json_into_a_missing_folder",
        setup: nothing,
        args: "steer --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/x.safetensors --device cpu --ablate 0 --json {dir}/no/r.json",
        code: 2,
        expect: &["--json", "no/r.json: folder", "/no does not exist"],
        gpu: false,
    },
    Line {
        name: "steer_out_folder_below_a_file",
        setup: |d| std::fs::write(d.join("f"), "x").unwrap(),
        args: "steer --sae {dir}/sae --data {dir}/*.safetensors --out {dir}/f/steered --device cpu --ablate 0",
        code: 2,
        expect: &[
            "--out",
            "f/steered: cannot create the folder:",
            "/f is a file",
        ],
        gpu: false,
    },
    Line {
        // Exit 1 after the whole evaluation before ("File exists (os error 17)").
        name: "eval_plots_into_a_file",
        setup: |d| std::fs::write(d.join("f"), "x").unwrap(),
        args: "eval --sae {dir}/sae --data {dir}/good.safetensors --device cpu --plots {dir}/f/plots",
        code: 2,
        expect: &[
            "--plots",
            "f/plots: cannot create the folder:",
            "/f is a file",
        ],
        gpu: false,
    },
    Line {
        // Exit 1 after training before.
        name: "toy_out_is_a_file",
        setup: |d| std::fs::write(d.join("f"), "x").unwrap(),
        args: "toy --out {dir}/f --steps 2 --device cpu",
        code: 2,
        expect: &["--out", "/f: is a file, expected a folder"],
        gpu: false,
    },
    Line {
        name: "toy_lab_out_below_a_file",
        setup: |d| std::fs::write(d.join("f"), "x").unwrap(),
        args: "toy --experiment perturb --out {dir}/f/lab --steps 2 --device cpu",
        code: 2,
        expect: &["--out", "f/lab: cannot create the folder:", "/f is a file"],
        gpu: false,
    },
    Line {
        // Exit 1 ("Not a directory") after reading the SAE before.
        name: "convert_out_below_a_file",
        setup: |d| std::fs::write(d.join("f"), "x").unwrap(),
        args: "convert {dir}/sae {dir}/f/conv",
        code: 2,
        expect: &["OUT", "f/conv: cannot create the folder:", "/f is a file"],
        gpu: false,
    },
    Line {
        // Aborted with "memory allocation of ... bytes failed" (exit 134) before.
        name: "encode_batch_beyond_host_memory",
        setup: nothing,
        args: "encode --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/c.safetensors --device cpu --batch 1000000000000",
        code: 2,
        expect: &[
            "--batch 1000000000000 with d_sae 16 needs about",
            "lower --batch",
        ],
        gpu: false,
    },
    Line {
        name: "steer_batch_beyond_host_memory",
        setup: nothing,
        args: "steer --sae {dir}/sae --data {dir}/good.safetensors --out {dir}/s.safetensors --device cpu --ablate 0 --batch 1000000000000",
        code: 2,
        expect: &[
            "--batch 1000000000000 with d_sae 16 needs about",
            "lower --batch",
        ],
        gpu: false,
    },
    Line {
        // Encoded twice before: every row's codes appeared twice.
        name: "encode_shard_given_twice",
        setup: nothing,
        args: "encode --sae {dir}/sae --data {dir}/good.safetensors {dir}/./good.safetensors --out {dir}/c.safetensors --device cpu",
        code: 2,
        expect: &["good.safetensors: given twice (also as", "list it once"],
        gpu: false,
    },
];
