//! Initial noise from a seed (placeholder until the samplers branch lands).
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

/// `torch.manual_seed(seed); torch.randn(shape)` on the CPU, then moved to `device`.
pub fn seeded_noise(
    seed: u64,
    shape: &[i64],
    kind: Kind,
    device: Device,
) -> Result<Tensor, tch::TchError> {
    let _lock = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    let noise = Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?;
    noise.f_to_kind(kind)?.f_to_device(device)
}
