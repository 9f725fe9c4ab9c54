//! What a run leaves in memory: the cache's own accounting beside, on a CUDA device, the
//! caching allocator's figures, so the two can be compared (the cache budget is only honest if
//! the device holds about what the cache says it holds).
use tch::Device;

/// The cache and the device after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryReport {
    pub cache_entries: usize,
    /// Bytes of the values the cache keeps (models included).
    pub cache_bytes: u64,
    pub cache_budget: u64,
    /// On CUDA: the allocator's figures (peaks since the run started); `None` on the CPU or
    /// where the build has no CUDA support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceMemory>,
}

/// One CUDA device's memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMemory {
    /// Held by live tensors.
    pub allocated: u64,
    pub allocated_peak: u64,
    /// Held by the allocator (live tensors and its free blocks).
    pub reserved: u64,
    pub reserved_peak: u64,
    /// The driver's view of the whole device (0 when unknown).
    pub total: u64,
    pub free: u64,
}

/// The allocator's figures for `device`, if it is a CUDA device this build can ask.
pub fn device_memory(device: Device) -> Option<DeviceMemory> {
    let Device::Cuda(index) = device else {
        return None;
    };
    let stats = weft_cuda::memory_stats(index).ok()?;
    Some(DeviceMemory {
        allocated: stats.allocated,
        allocated_peak: stats.allocated_peak,
        reserved: stats.reserved,
        reserved_peak: stats.reserved_peak,
        total: stats.device_total,
        free: stats.device_free,
    })
}

/// Starts new peaks on `device` (a CUDA device; elsewhere nothing happens).
pub fn start_peaks(device: Device) {
    if let Device::Cuda(index) = device {
        let _ = weft_cuda::reset_peak_memory(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_figures() {
        assert_eq!(device_memory(Device::Cpu), None);
        start_peaks(Device::Cpu);
    }

    #[test]
    fn a_missing_cuda_device_gives_no_figures_rather_than_an_abort() {
        if tch::Cuda::is_available() {
            return;
        }
        assert_eq!(device_memory(Device::Cuda(0)), None);
        start_peaks(Device::Cuda(0));
    }
}
