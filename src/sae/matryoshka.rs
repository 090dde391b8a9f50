//! Matryoshka BatchTopK (`--arch matryoshka`): the level widths and their checks. The
//! step's level-aware stages are `crate::reference::matryoshka` (the CPU engine runs them);
//! selection, threshold, AuxK and export are BatchTopK's. Kept apart from `config.rs` so the
//! architecture's rules live in one place.

use super::Arch;
use crate::reference::reduce::slot::MAX_LEVELS;
use crate::{Error, Result};

/// The checked `--matryoshka-widths` of a run: strictly increasing, positive, the last =
/// d_sae, at most `MAX_LEVELS` levels (the metrics hold one slot per level). Empty for the
/// other architectures, which refuse the flag. SAELens appends d_sae when the last width
/// differs, with a warning; saeforge asks for it, so the widths in cfg.json are the ones
/// trained.
pub fn resolve_widths(arch: Arch, given: Option<&[usize]>, d_sae: usize) -> Result<Vec<usize>> {
    let flag = "--matryoshka-widths";
    let Some(w) = given else {
        if arch == Arch::Matryoshka {
            return Err(Error::input(format!(
                "{flag}: missing; --arch matryoshka needs the nested widths, strictly increasing, the last = d_sae (e.g. {},{},{d_sae})",
                (d_sae / 16).max(1),
                (d_sae / 4).max(1),
            )));
        }
        return Ok(Vec::new());
    };
    let list = w
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if arch != Arch::Matryoshka {
        return Err(Error::input(format!(
            "{flag} {list}: only for --arch matryoshka"
        )));
    }
    if w.is_empty() || w.len() > MAX_LEVELS {
        return Err(Error::input(format!(
            "{flag} {list}: expected 1 to {MAX_LEVELS} widths"
        )));
    }
    if w[0] == 0 || w.windows(2).any(|p| p[0] >= p[1]) {
        return Err(Error::input(format!(
            "{flag} {list}: expected positive widths, strictly increasing"
        )));
    }
    if *w.last().unwrap() != d_sae {
        return Err(Error::input(format!(
            "{flag} {list}: the last width must be d_sae = {d_sae}"
        )));
    }
    Ok(w.to_vec())
}

/// The widths as the kernels take them (u32); empty for the other architectures.
pub fn widths_u32(cfg: &super::TrainConfig) -> Vec<u32> {
    cfg.matryoshka_widths.iter().map(|&w| w as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_checked() {
        let m = Arch::Matryoshka;
        assert_eq!(
            resolve_widths(m, Some(&[4, 16, 64]), 64).unwrap(),
            [4, 16, 64]
        );
        assert!(
            resolve_widths(Arch::Batchtopk, None, 64)
                .unwrap()
                .is_empty()
        );
        for (w, want) in [
            (&[4usize, 16, 32][..], "must be d_sae = 64"),
            (&[16, 4, 64][..], "strictly increasing"),
            (&[16, 16, 64][..], "strictly increasing"),
            (&[0, 64][..], "strictly increasing"),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 64][..], "1 to 8"),
        ] {
            let e = resolve_widths(m, Some(w), 64).unwrap_err().to_string();
            assert!(e.contains(want), "{w:?}: {e}");
        }
        let e = resolve_widths(m, None, 64).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let e = resolve_widths(Arch::Topk, Some(&[64]), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only for --arch matryoshka"), "{e}");
    }
}
