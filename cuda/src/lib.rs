//! What weft needs of libtorch's CUDA side that tch does not bind: CUDA-graph capture and
//! replay (`at::cuda::CUDAGraph`) and the caching allocator's memory statistics, through the
//! small C++ shim in csrc/. Without a CUDA build of torch at build time every call answers
//! [`CudaError::NotBuilt`].
use std::fmt;

/// Why a CUDA call did not happen or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaError {
    /// This build has no shim (torch without CUDA at build time).
    NotBuilt,
    /// libtorch threw; its message.
    Torch(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBuilt => write!(
                f,
                "this weft was built without CUDA support in its torch (CUDA graphs and device \
                 memory statistics are unavailable)"
            ),
            Self::Torch(message) => write!(f, "libtorch: {message}"),
        }
    }
}

impl std::error::Error for CudaError {}

pub type Result<T> = std::result::Result<T, CudaError>;

/// Whether the shim was compiled into this build.
pub fn built_with_shim() -> bool {
    cfg!(weft_cuda_shim)
}

/// The caching allocator's view of one device, in bytes, plus the driver's total and free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live tensors.
    pub allocated: u64,
    /// The most `allocated` has been since the last [`reset_peak_memory`].
    pub allocated_peak: u64,
    /// Bytes the allocator holds from the driver (live tensors and its cache of free blocks).
    pub reserved: u64,
    pub reserved_peak: u64,
    /// The device's memory as the driver reports it (0 when unknown).
    pub device_total: u64,
    pub device_free: u64,
}

#[cfg(weft_cuda_shim)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn weft_cuda_last_error() -> *const c_char;
        pub fn weft_cuda_graph_new(device: i32, out: *mut *mut c_void) -> c_int;
        pub fn weft_cuda_graph_free(graph: *mut c_void);
        pub fn weft_cuda_graph_enter_stream(graph: *mut c_void) -> c_int;
        pub fn weft_cuda_graph_leave_stream(graph: *mut c_void) -> c_int;
        pub fn weft_cuda_graph_capture_begin(graph: *mut c_void) -> c_int;
        pub fn weft_cuda_graph_capture_end(graph: *mut c_void) -> c_int;
        pub fn weft_cuda_graph_replay(graph: *mut c_void) -> c_int;
        pub fn weft_cuda_memory_stats(device: i32, out: *mut u64) -> c_int;
        pub fn weft_cuda_reset_peak_memory(device: i32) -> c_int;
        pub fn weft_cuda_empty_cache() -> c_int;
    }
}

/// Turns a shim status into a Result, reading the thread's last message on failure.
#[cfg(weft_cuda_shim)]
fn check(status: std::ffi::c_int) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that stays
    // valid until the next shim call on this thread; it is copied out at once.
    let message = unsafe { std::ffi::CStr::from_ptr(ffi::weft_cuda_last_error()) };
    Err(CudaError::Torch(message.to_string_lossy().into_owned()))
}

/// Memory statistics of CUDA device `device`. Call only where CUDA is available.
pub fn memory_stats(device: usize) -> Result<MemoryStats> {
    #[cfg(weft_cuda_shim)]
    {
        let mut out = [0u64; 6];
        // SAFETY: `out` has the six slots the shim writes.
        check(unsafe { ffi::weft_cuda_memory_stats(device as i32, out.as_mut_ptr()) })?;
        Ok(MemoryStats {
            allocated: out[0],
            allocated_peak: out[1],
            reserved: out[2],
            reserved_peak: out[3],
            device_total: out[4],
            device_free: out[5],
        })
    }
    #[cfg(not(weft_cuda_shim))]
    {
        let _ = device;
        Err(CudaError::NotBuilt)
    }
}

/// Starts a new peak for [`MemoryStats::allocated_peak`] and `reserved_peak`.
pub fn reset_peak_memory(device: usize) -> Result<()> {
    #[cfg(weft_cuda_shim)]
    {
        // SAFETY: plain call; the shim catches libtorch's exceptions.
        check(unsafe { ffi::weft_cuda_reset_peak_memory(device as i32) })
    }
    #[cfg(not(weft_cuda_shim))]
    {
        let _ = device;
        Err(CudaError::NotBuilt)
    }
}

/// Gives the allocator's free cached blocks back to the driver.
pub fn empty_cache() -> Result<()> {
    #[cfg(weft_cuda_shim)]
    {
        // SAFETY: plain call; the shim catches libtorch's exceptions.
        check(unsafe { ffi::weft_cuda_empty_cache() })
    }
    #[cfg(not(weft_cuda_shim))]
    {
        Err(CudaError::NotBuilt)
    }
}

/// A captured sequence of CUDA work that [`CudaGraph::replay`] launches again as one unit,
/// reading and writing the same device addresses it was captured with: inputs are copied into
/// the tensors used at capture, outputs read from the tensors produced then. The memory of
/// the captured work stays reserved (a private pool) while the graph lives.
pub struct CudaGraph {
    #[cfg(weft_cuda_shim)]
    raw: *mut std::ffi::c_void,
}

// SAFETY: a CUDA graph is a handle to device-side objects; the shim does not tie it to the
// thread that made it, and replay sets the graph's device itself.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Runs `work` `warmups` times on a side stream (so lazily made library handles exist),
    /// then once more under capture, and returns the graph with what the captured call
    /// returned: tensors in it are the graph's outputs, rewritten by every replay. An error
    /// from `work` ends the capture and is returned as `Err(Err(e))`; libtorch's as `Err(Ok)`.
    pub fn capture<T, E>(
        device: usize,
        warmups: usize,
        mut work: impl FnMut() -> std::result::Result<T, E>,
    ) -> std::result::Result<(Self, T), std::result::Result<CudaError, E>> {
        #[cfg(weft_cuda_shim)]
        {
            let mut raw = std::ptr::null_mut();
            // SAFETY: `raw` receives a new Graph owned by the returned value (or freed below).
            check(unsafe { ffi::weft_cuda_graph_new(device as i32, &mut raw) }).map_err(Ok)?;
            let graph = Self { raw };
            // SAFETY (all calls below): `graph.raw` is a live Graph made above.
            check(unsafe { ffi::weft_cuda_graph_enter_stream(graph.raw) }).map_err(Ok)?;
            let captured = (|| {
                for _ in 0..warmups {
                    work().map_err(Err)?;
                }
                check(unsafe { ffi::weft_cuda_graph_capture_begin(graph.raw) }).map_err(Ok)?;
                let result = work();
                // The capture is ended whatever `work` did, so the stream is usable again.
                let ended = check(unsafe { ffi::weft_cuda_graph_capture_end(graph.raw) });
                let value = result.map_err(Err)?;
                ended.map_err(Ok)?;
                Ok(value)
            })();
            let left = check(unsafe { ffi::weft_cuda_graph_leave_stream(graph.raw) });
            let value = captured?;
            left.map_err(Ok)?;
            Ok((graph, value))
        }
        #[cfg(not(weft_cuda_shim))]
        {
            let _ = (device, warmups, &mut work);
            Err(Ok(CudaError::NotBuilt))
        }
    }

    /// Launches the captured work on the current stream.
    pub fn replay(&self) -> Result<()> {
        #[cfg(weft_cuda_shim)]
        {
            // SAFETY: `self.raw` is a live, captured Graph.
            check(unsafe { ffi::weft_cuda_graph_replay(self.raw) })
        }
        #[cfg(not(weft_cuda_shim))]
        {
            Err(CudaError::NotBuilt)
        }
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        #[cfg(weft_cuda_shim)]
        // SAFETY: `self.raw` was made by weft_cuda_graph_new and is freed once, here.
        unsafe {
            ffi::weft_cuda_graph_free(self.raw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_is_built_where_torch_has_cuda() {
        // The project's venv has PyPI's CUDA build of torch: the shim must be in this build.
        let torch_has_cuda = std::env::var("WEFT_TORCH_LIB")
            .map(|lib| std::path::Path::new(&lib).join("libtorch_cuda.so").exists())
            .unwrap_or(false);
        if torch_has_cuda {
            assert!(
                built_with_shim(),
                "torch has CUDA but the shim was not built"
            );
        }
    }

    #[test]
    fn without_a_device_the_calls_fail_with_a_message_instead_of_aborting() {
        if tch::Cuda::is_available() {
            return;
        }
        match memory_stats(0) {
            Err(CudaError::Torch(message)) => {
                eprintln!("memory_stats without a device: {message}");
                assert!(!message.is_empty())
            }
            Err(CudaError::NotBuilt) => assert!(!built_with_shim()),
            Ok(stats) => panic!("no device, yet statistics {stats:?}"),
        }
        let captured = CudaGraph::capture(0, 0, || Ok::<_, ()>(()));
        match captured {
            Err(Ok(e)) => eprintln!("capture without a device: {e}"),
            _ => panic!("a graph captured without a device"),
        }
    }
}
