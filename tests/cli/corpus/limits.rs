//! Sizes and ranges: oversized toy requests (every experiment sizes its own buffers; an
//! allocation that failed aborted the process, exit 134), toy options an experiment
//! ignores, and train / sweep values that were silently clamped (`--k-aux` above d_sae,
//! `--prefetch 0`).

use std::path::Path;

use super::lines::Line;

fn nothing(_: &Path) {}

/// A toy command line of one step on the CPU engine, writing to `{dir}/toy`.
macro_rules! toy {
    ($flags:literal) => {
        concat!("toy --device cpu --steps 1 --out {dir}/toy ", $flags)
    };
}

/// A toy command line that asks for 10^12 rows a step.
macro_rules! huge_batch {
    ($name:literal, $flags:literal) => {
        Line {
            name: $name,
            setup: nothing,
            args: toy!($flags),
            code: 2,
            expect: &["--batch 1000000000000", "GiB of memory", "lower --batch"],
            gpu: false,
        }
    };
}

/// The same option given where the run ignores it.
macro_rules! ignored {
    ($name:literal, $flags:literal, $expect:literal) => {
        Line {
            name: $name,
            setup: nothing,
            args: toy!($flags),
            code: 2,
            expect: &[$expect],
            gpu: false,
        }
    };
}

pub const LIMIT_LINES: &[Line] = &[
    huge_batch!("toy_sweep_huge_batch", "--batch 1000000000000"),
    huge_batch!("toy_phase_huge_batch", "--phase --batch 1000000000000"),
    huge_batch!(
        "toy_perturb_huge_batch",
        "--experiment perturb --batch 1000000000000"
    ),
    huge_batch!(
        "toy_correlated_huge_batch",
        "--experiment correlated --batch 1000000000000"
    ),
    huge_batch!(
        "toy_geometry_huge_batch",
        "--experiment geometry --batch 1000000000000"
    ),
    huge_batch!(
        "toy_dynamics_huge_batch",
        "--experiment dynamics --record-every 1 --batch 1000000000000"
    ),
    huge_batch!(
        "toy_adversarial_huge_batch",
        "--experiment adversarial --batch 1000000000000"
    ),
    huge_batch!(
        "toy_privileged_huge_batch",
        "--experiment privileged --batch 1000000000000"
    ),
    huge_batch!(
        "toy_abs_huge_batch",
        "--experiment abs --batch 1000000000000"
    ),
    huge_batch!("toy_l1_huge_batch", "--experiment l1 --batch 1000000000000"),
    huge_batch!(
        "toy_intervene_huge_batch",
        "--experiment intervene --batch 1000000000000"
    ),
    Line {
        name: "toy_huge_features",
        setup: nothing,
        args: toy!("--features 100000000000"),
        code: 2,
        expect: &["n 100000000000 -> m 2", "GiB of memory", "--features"],
        gpu: false,
    },
    Line {
        name: "toy_phase_huge_restarts",
        setup: nothing,
        args: toy!("--phase --restarts 100000000000"),
        code: 2,
        expect: &["toy --phase: 22500000000000 instances", "--restarts"],
        gpu: false,
    },
    Line {
        name: "toy_huge_density_count",
        setup: nothing,
        args: toy!("--density-range 0.01:1:1000000000000"),
        code: 2,
        expect: &[
            "--density-range 0.01:1:1000000000000 (1000000000000 instances)",
            "lower COUNT",
        ],
        gpu: false,
    },
    Line {
        name: "toy_dynamics_huge_record_count",
        setup: nothing,
        args: "toy --device cpu --steps 1000000000000 --out {dir}/toy --experiment dynamics --record-every 1",
        code: 2,
        expect: &[
            "--record-every 1 = 1000000000001 records",
            "raise --record-every",
        ],
        gpu: false,
    },
    Line {
        name: "toy_intervene_huge_capture",
        setup: nothing,
        args: toy!("--experiment intervene --capture-rows 1000000000000"),
        code: 2,
        expect: &["--capture-rows 1000000000000 (n ", "lower --capture-rows"],
        gpu: false,
    },
    // Options an experiment ignores (accepted and silently unused before).
    ignored!(
        "toy_restarts_in_the_sweep",
        "--batch 8 --restarts 2",
        "--restarts does not apply to the sweep (no --phase or --experiment) (it is read by --phase, --experiment perturb and --experiment correlated)"
    ),
    ignored!(
        "toy_restarts_in_geometry",
        "--batch 8 --experiment geometry --restarts 2",
        "--restarts does not apply to --experiment geometry"
    ),
    ignored!(
        "toy_importance_range_without_phase",
        "--batch 8 --experiment perturb --importance-range 0.1:1:2",
        "--importance-range does not apply to --experiment perturb (it is read by --phase)"
    ),
    ignored!(
        "toy_init_in_privileged",
        "--batch 8 --experiment privileged --init xavier",
        "--init does not apply to --experiment privileged"
    ),
    // train and sweep: out of range instead of clamped.
    Line {
        name: "train_k_aux_above_d_sae",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --k-aux 17",
        code: 2,
        expect: &["--k-aux 17: expected 1 ..= d_sae (16)"],
        gpu: false,
    },
    Line {
        name: "train_k_aux_above_d_sae_from_config",
        setup: |d| std::fs::write(d.join("c.toml"), "k_aux = 17\n").unwrap(),
        args: "{train} --d-sae 16 --k 4 --batch 16 --config {dir}/c.toml",
        code: 2,
        expect: &["--k-aux 17: expected 1 ..= d_sae (16)"],
        gpu: false,
    },
    Line {
        name: "train_prefetch_zero",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --prefetch 0",
        code: 2,
        expect: &["--prefetch 0: expected at least 1"],
        gpu: false,
    },
    Line {
        name: "train_prefetch_zero_from_config",
        setup: |d| std::fs::write(d.join("c.toml"), "prefetch = 0\n").unwrap(),
        args: "{train} --d-sae 16 --k 4 --batch 16 --config {dir}/c.toml",
        code: 2,
        expect: &["--prefetch 0: expected at least 1"],
        gpu: false,
    },
    Line {
        name: "train_prefetch_huge",
        setup: nothing,
        args: "{train} --d-sae 16 --k 4 --batch 16 --prefetch 1000000000000",
        code: 2,
        expect: &[
            "--prefetch 1000000000000 with --batch 16",
            "lower --prefetch",
        ],
        gpu: false,
    },
    Line {
        name: "sweep_k_aux_above_d_sae",
        setup: nothing,
        args: "sweep --data {dir}/good.safetensors --out {dir}/sw --k 2,4 --set d_sae=16 --set batch=16 --set steps=2 --set device=cpu --set k_aux=17",
        code: 2,
        expect: &["--k-aux 17: expected 1 ..= d_sae (16)"],
        gpu: false,
    },
    Line {
        name: "sweep_prefetch_zero",
        setup: nothing,
        args: "sweep --data {dir}/good.safetensors --out {dir}/sw --k 2,4 --set d_sae=16 --set batch=16 --set steps=2 --set device=cpu --set prefetch=0",
        code: 2,
        expect: &["--prefetch 0: expected at least 1"],
        gpu: false,
    },
];
