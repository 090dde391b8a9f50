//! Single bad command lines: flags, run folders, configs.

use std::path::Path;

use crate::fx::{self, f32_bytes, randn};
use crate::{run, words};

/// A single command line: setup, arguments (`{dir}` is the case's folder, which also holds
/// good.safetensors and sae/), expected exit code and words, and whether it needs a GPU.
pub struct Line {
    pub name: &'static str,
    pub setup: fn(&Path),
    pub args: &'static str,
    pub code: i32,
    pub expect: &'static [&'static str],
    pub gpu: bool,
}

/// The start of a train command line; each case adds the flags it is about.
pub const TRAIN: &str =
    "train --data {dir}/good.safetensors --out {dir}/out --device cpu --steps 2";

fn nothing(_: &Path) {}

/// A folder that looks like a finished run (enough for the refusals to trigger).
fn run_folder(d: &Path) {
    let r = d.join("run");
    std::fs::create_dir_all(r.join("checkpoint")).unwrap();
    std::fs::write(r.join("config.json"), "{}").unwrap();
}

pub const LINES: &[Line] = &[
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
        // Went on to draw the sample (aborting when the allocation failed) before.
        name: "train_init_rows_beyond_host_memory",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --init-rows 1000000000000",
        code: 2,
        expect: &[
            "--init-rows 1000000000000 (d = 8) needs about",
            "lower --init-rows",
        ],
        gpu: false,
    },
    Line {
        // Read twice before: its rows counted double in training.
        name: "train_shard_given_twice",
        setup: nothing,
        args: "train --data {dir}/good.safetensors {dir}/*.safetensors --out {dir}/out --device cpu --steps 2 --d-sae 16 --k 4 --batch 16",
        code: 2,
        expect: &["good.safetensors: given twice (also as", "list it once"],
        gpu: false,
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
        name: "encode_pre_activation_overflows",
        setup: |d| {
            // Finite weights whose products overflow f32: the CPU encoder's check.
            let (dd, n) = (8, 16);
            let s = d.join("huge_sae");
            fx::cfg(&s, dd, n, "topk", 4);
            let w = f32_bytes(&vec![3e38f32; dd * n]);
            let zeros = |len: usize| f32_bytes(&vec![0.0f32; len]);
            #[rustfmt::skip]
            fx::write(&s.join("sae_weights.safetensors"), &[
                ("W_enc", "F32", vec![dd, n], w.clone()),
                ("W_dec", "F32", vec![n, dd], w),
                ("b_enc", "F32", vec![n], zeros(n)),
                ("b_dec", "F32", vec![dd], zeros(dd)),
            ]);
        },
        args: "encode --sae {dir}/huge_sae --data {dir}/good.safetensors --out {dir}/codes.safetensors --device cpu",
        code: 2,
        expect: &["pre-activation of latent", "not finite"],
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
        // Accepted before, and silently did nothing (the sweep refused it for a member).
        name: "train_option_the_arch_ignores",
        setup: nothing,
        args: "{train} --d-sae 16 --batch 16 --arch relu --k 4",
        code: 2,
        expect: &["--k: has no effect with arch relu (it is for topk / batchtopk / matryoshka)"],
        gpu: false,
    },
    Line {
        name: "train_l1_with_topk_from_config",
        setup: |d| std::fs::write(d.join("c.toml"), "arch = \"topk\"\n").unwrap(),
        args: "{train} --d-sae 16 --k 4 --batch 16 --config {dir}/c.toml --l1 3",
        code: 2,
        expect: &["--l1: has no effect with arch topk (it is for relu)"],
        gpu: false,
    },
    Line {
        // Both set the run's length; --steps silently won before.
        name: "train_steps_and_tokens",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --tokens 64",
        code: 2,
        expect: &["--steps 2 and --tokens 64: give one of them"],
        gpu: false,
    },
    Line {
        // --d-sae silently won over --expansion before.
        name: "train_d_sae_and_expansion",
        setup: nothing,
        args: "{train} --d-sae 16 --expansion 4 --k 4 --batch 16",
        code: 2,
        expect: &["--d-sae 16 and --expansion 4: give one of them"],
        gpu: false,
    },
    Line {
        name: "train_config_steps_and_tokens",
        setup: |d| std::fs::write(d.join("c.toml"), "steps = 2\ntokens = 64\n").unwrap(),
        args: "train --data {dir}/good.safetensors --out {dir}/out --device cpu --d-sae 16 --k 4 --batch 16 --config {dir}/c.toml",
        code: 2,
        expect: &["--config", "c.toml: `steps` and `tokens` are both set"],
        gpu: false,
    },
    Line {
        name: "train_resume_steps_and_tokens",
        setup: run_folder,
        args: "train --resume {dir}/run --steps 5 --tokens 64",
        code: 2,
        expect: &["--steps 5 and --tokens 64: give one of them"],
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
        // Wrote a run beside the sweep's files before (exit 0).
        name: "train_out_holds_a_sweep",
        setup: |d| {
            std::fs::create_dir(d.join("out")).unwrap();
            std::fs::write(d.join("out/sweep-spec.json"), "{}").unwrap();
        },
        args: "{train} --d-sae 16 --k 4 --batch 16",
        code: 2,
        expect: &[
            "--out",
            "/out: holds a sweep (sweep-spec.json), not a training run",
        ],
        gpu: false,
    },
    Line {
        // --overwrite removes a run's files only: it does not make a dataset's folder a run's.
        name: "train_overwrite_out_holds_a_dataset",
        setup: |d| {
            std::fs::create_dir(d.join("out")).unwrap();
            std::fs::write(d.join("out/synth.json"), "{}").unwrap();
        },
        args: "{train} --d-sae 16 --k 4 --batch 16 --overwrite",
        code: 2,
        expect: &["/out: holds a synth dataset (synth.json), not a training run"],
        gpu: false,
    },
    Line {
        name: "sweep_out_holds_a_run",
        setup: run_folder,
        args: "sweep --data {dir}/good.safetensors --out {dir}/run --k 2,4 --set d_sae=16 --set batch=16 --set steps=2 --set device=cpu",
        code: 2,
        expect: &[
            "--out",
            "/run: holds a training run (config.json), not a sweep",
        ],
        gpu: false,
    },
    Line {
        // --grid k=8 silently replaced --k 2,4 before.
        name: "sweep_grid_axis_twice",
        setup: nothing,
        args: "sweep --data {dir}/good.safetensors --out {dir}/sw --k 2,4 --grid k=8 --set d_sae=16 --set batch=16 --set steps=2 --set device=cpu",
        code: 2,
        expect: &["--grid k=8: option `k` is also given by --k 2,4"],
        gpu: false,
    },
    Line {
        // The last --set d_sae silently won before.
        name: "sweep_set_twice",
        setup: nothing,
        args: "sweep --data {dir}/good.safetensors --out {dir}/sw --k 2,4 --set d_sae=16 --set d_sae=32 --set batch=16 --set steps=2 --set device=cpu",
        code: 2,
        expect: &["--set d_sae=32: option `d_sae` is also given by --set d_sae=16"],
        gpu: false,
    },
    Line {
        name: "synth_out_holds_a_run",
        setup: run_folder,
        args: "synth --out {dir}/run --features 16 --d-in 8 --tokens 64",
        code: 2,
        expect: &[
            "--out",
            "/run: holds a training run (config.json), not a synth dataset",
        ],
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
        // Named as "Exponential(0.0, 1.0)" (Rust's Debug form) before.
        name: "synth_magnitude_mean_as_written",
        setup: nothing,
        args: "synth --out {dir}/syn --features 16 --d-in 8 --tokens 64 --magnitude-mean exponential:0:1",
        code: 2,
        expect: &["--magnitude-mean exponential:0:1: expected finite ends > 0"],
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
        // Evaluated one row before, without a word.
        name: "eval_rows_zero",
        setup: nothing,
        args: "eval --sae {dir}/sae --data {dir}/good.safetensors --rows 0",
        code: 2,
        expect: &["--rows 0: expected at least 1"],
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
