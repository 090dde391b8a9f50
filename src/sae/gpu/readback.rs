//! The GPU engine as a [`StepEngine`]: the step, and the readbacks of the metric sums and
//! of the whole training state (the only reads from the device).

use std::borrow::Cow;

use super::GpuEngine;
use crate::Result;
use crate::gpu::GpuTensor;
use crate::kernels::reduce::slot;
use crate::reference::reduce::METRIC_SLOTS;
use crate::sae::engine::{Moments, StepEngine, TrainState};
use crate::sae::params::ParamSet;
use crate::sae::{Arch, TrainConfig};

impl dyn StepEngine {
    /// This engine as the GPU engine, if it is one.
    pub fn as_gpu(&mut self) -> Option<&mut GpuEngine> {
        self.as_any().downcast_mut()
    }
}

impl StepEngine for GpuEngine {
    fn step(&mut self, cfg: &TrainConfig, x: &[f32], rows: usize) -> Result<()> {
        self.step_marked(cfg, x, rows, &mut |_, _| Ok(()))
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn take_metrics(&mut self) -> Result<(Vec<f32>, f32)> {
        let g = &*self.gpu;
        let m = g.read_f32(&self.metrics)?;
        let clip = g.read_f32(&self.clip)?;
        let mut reset = vec![0.0f32; METRIC_SLOTS];
        reset[slot::DEAD as usize] = m[slot::DEAD as usize];
        g.write(&self.metrics, &reset)?;
        Ok((m, clip[1]))
    }

    fn state(&mut self) -> Result<Cow<'_, TrainState>> {
        let g = &*self.gpu;
        let jump = self.cfg.arch == Arch::Jumprelu;
        let read = |set: &ParamSet<GpuTensor>| -> Result<_> {
            let mut host = set.try_map(|_, t| g.read_f32(t))?;
            if !jump {
                host.log_threshold.clear();
            }
            Ok(host)
        };
        Ok(Cow::Owned(TrainState {
            params: read(&self.params)?,
            moments: Moments {
                m: read(&self.m)?,
                v: read(&self.v)?,
            },
            step: self.step,
            since_fired: g.read_u32(&self.since)?,
            fire_total: g.read_u32(&self.total)?,
            threshold: g.read_f32(&self.thr_state)?[0],
            metrics: g.read_f32(&self.metrics)?,
            grad_norm: g.read_f32(&self.clip)?[1],
        }))
    }
}
