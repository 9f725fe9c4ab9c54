//! What weft needs of libtorch's CUDA side that tch does not bind: CUDA-graph capture and
//! replay (`at::cuda::CUDAGraph`) and the caching allocator's memory statistics, through the
//! small C++ shim in csrc/. Nothing of CUDA is loaded until [`load`] is called: it maps
//! libtorch_cuda (with its CUDA libraries, ~350 MB resident that a CPU run does without) and
//! then the shim, which this crate carries inside the binary. Every other call answers
//! [`CudaError::NotLoaded`] before that, and [`CudaError::NotBuilt`] in a build whose torch
//! has no CUDA.
use std::ffi::{c_char, c_int, c_void};
use std::fmt;
use std::sync::OnceLock;

/// Why a CUDA call did not happen or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaError {
    /// This build has no shim (torch without CUDA at build time).
    NotBuilt,
    /// [`load`] has not been called (or the program runs on the CPU).
    NotLoaded,
    /// [`load`] failed; why.
    Load(String),
    /// libtorch threw; its message.
    Torch(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBuilt => write!(
                f,
                "this weft was built against a torch without CUDA (no CUDA devices, graphs or \
                 device memory statistics)"
            ),
            Self::NotLoaded => write!(f, "CUDA support is not loaded (a CPU run)"),
            Self::Load(why) => write!(f, "loading CUDA support: {why}"),
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

/// Whether this machine has an NVIDIA driver (its device nodes or its /proc entry): where it
/// has none, `--device auto` does not load CUDA at all.
pub fn nvidia_driver_present() -> bool {
    [
        "/proc/driver/nvidia/version",
        "/dev/nvidiactl",
        "/dev/nvidia0",
    ]
    .iter()
    .any(|path| std::path::Path::new(path).exists())
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

/// The shim's entry points, resolved once by [`load`].
struct Shim {
    last_error: unsafe extern "C" fn() -> *const c_char,
    graph_new: unsafe extern "C" fn(i32, *mut *mut c_void) -> c_int,
    graph_free: unsafe extern "C" fn(*mut c_void),
    graph_enter_stream: unsafe extern "C" fn(*mut c_void) -> c_int,
    graph_leave_stream: unsafe extern "C" fn(*mut c_void) -> c_int,
    graph_capture_begin: unsafe extern "C" fn(*mut c_void) -> c_int,
    graph_capture_end: unsafe extern "C" fn(*mut c_void) -> c_int,
    graph_replay: unsafe extern "C" fn(*mut c_void) -> c_int,
    memory_stats: unsafe extern "C" fn(i32, *mut u64) -> c_int,
    reset_peak_memory: unsafe extern "C" fn(i32) -> c_int,
    empty_cache: unsafe extern "C" fn() -> c_int,
}

static SHIM: OnceLock<std::result::Result<Shim, String>> = OnceLock::new();

/// Loads libtorch_cuda (so that libtorch finds CUDA) and the shim. Call it before anything
/// asks libtorch about CUDA: libtorch settles whether CUDA exists at the first question. Later
/// calls return the first one's outcome.
pub fn load() -> Result<()> {
    if !built_with_shim() {
        return Err(CudaError::NotBuilt);
    }
    match SHIM.get_or_init(load_shim) {
        Ok(_) => Ok(()),
        Err(why) => Err(CudaError::Load(why.clone())),
    }
}

/// Whether [`load`] has succeeded.
pub fn loaded() -> bool {
    matches!(SHIM.get(), Some(Ok(_)))
}

fn shim() -> Result<&'static Shim> {
    match SHIM.get() {
        Some(Ok(shim)) => Ok(shim),
        Some(Err(why)) => Err(CudaError::Load(why.clone())),
        None if built_with_shim() => Err(CudaError::NotLoaded),
        None => Err(CudaError::NotBuilt),
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next dl call on
    // this thread; it is copied out at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        "unknown dynamic-loader error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { std::ffi::CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    }
}

/// dlopen; the handle is kept for the whole process (the library must stay mapped).
fn open_library(path: &std::ffi::CStr, flags: c_int) -> std::result::Result<*mut c_void, String> {
    // SAFETY: a valid C string and flags; loading runs the library's initialisers, which is
    // what is wanted here.
    let handle = unsafe { libc::dlopen(path.as_ptr(), flags) };
    if handle.is_null() {
        Err(dl_error())
    } else {
        Ok(handle)
    }
}

#[cfg(weft_cuda_shim)]
const SHIM_LIBRARY: &[u8] = include_bytes!(env!("WEFT_CUDA_SHIM_LIBRARY"));
#[cfg(not(weft_cuda_shim))]
const SHIM_LIBRARY: &[u8] = &[];

/// Loads the embedded shim from an anonymous memory file (nothing written to disk).
fn open_shim_from_memory() -> std::result::Result<*mut c_void, String> {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a valid name; the returned descriptor, if any, is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"weft-cuda-shim".as_ptr(), 0) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns; the File closes it once the
    // library is mapped.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(SHIM_LIBRARY).map_err(|e| e.to_string())?;
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|e| e.to_string())?;
    open_library(&path, libc::RTLD_NOW | libc::RTLD_LOCAL)
}

/// Loads the embedded shim from a private temporary file, removed once it is mapped (for
/// systems that refuse to load from a memory file).
fn open_shim_from_temporary_file() -> std::result::Result<*mut c_void, String> {
    let path = std::env::temp_dir().join(format!("weft-cuda-shim-{}.so", std::process::id()));
    std::fs::write(&path, SHIM_LIBRARY).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let c_path =
        std::ffi::CString::new(path.to_string_lossy().into_owned()).map_err(|e| e.to_string());
    let handle = c_path.and_then(|p| open_library(&p, libc::RTLD_NOW | libc::RTLD_LOCAL));
    let _ = std::fs::remove_file(&path);
    handle
}

fn load_shim() -> std::result::Result<Shim, String> {
    open_library(c"libtorch_cuda.so", libc::RTLD_NOW | libc::RTLD_GLOBAL)
        .map_err(|e| format!("libtorch_cuda.so: {e}"))?;
    let handle = open_shim_from_memory().or_else(|from_memory| {
        open_shim_from_temporary_file().map_err(|from_file| {
            format!("the embedded shim: {from_memory}; from a temporary file: {from_file}")
        })
    })?;
    /// The shim's function `name`, as the function-pointer type `T`.
    fn symbol<T: Copy>(
        handle: *mut c_void,
        name: &std::ffi::CStr,
    ) -> std::result::Result<T, String> {
        // SAFETY: `handle` is a loaded library; dlsym only looks the name up.
        let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if address.is_null() {
            return Err(format!("the shim lacks {name:?}"));
        }
        assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: T is the function-pointer type the C declaration of `name` has (csrc/).
        Ok(unsafe { std::mem::transmute_copy(&address) })
    }
    Ok(Shim {
        last_error: symbol(handle, c"weft_cuda_last_error")?,
        graph_new: symbol(handle, c"weft_cuda_graph_new")?,
        graph_free: symbol(handle, c"weft_cuda_graph_free")?,
        graph_enter_stream: symbol(handle, c"weft_cuda_graph_enter_stream")?,
        graph_leave_stream: symbol(handle, c"weft_cuda_graph_leave_stream")?,
        graph_capture_begin: symbol(handle, c"weft_cuda_graph_capture_begin")?,
        graph_capture_end: symbol(handle, c"weft_cuda_graph_capture_end")?,
        graph_replay: symbol(handle, c"weft_cuda_graph_replay")?,
        memory_stats: symbol(handle, c"weft_cuda_memory_stats")?,
        reset_peak_memory: symbol(handle, c"weft_cuda_reset_peak_memory")?,
        empty_cache: symbol(handle, c"weft_cuda_empty_cache")?,
    })
}

/// Turns a shim status into a Result, reading the thread's last message on failure.
fn check(shim: &Shim, status: c_int) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to a thread-local, NUL-terminated string that stays
    // valid until the next shim call on this thread; it is copied out at once.
    let message = unsafe { std::ffi::CStr::from_ptr((shim.last_error)()) };
    Err(CudaError::Torch(message.to_string_lossy().into_owned()))
}

/// Memory statistics of CUDA device `device`.
pub fn memory_stats(device: usize) -> Result<MemoryStats> {
    let shim = shim()?;
    let mut out = [0u64; 6];
    // SAFETY: `out` has the six slots the shim writes.
    check(shim, unsafe {
        (shim.memory_stats)(device as i32, out.as_mut_ptr())
    })?;
    Ok(MemoryStats {
        allocated: out[0],
        allocated_peak: out[1],
        reserved: out[2],
        reserved_peak: out[3],
        device_total: out[4],
        device_free: out[5],
    })
}

/// Starts a new peak for [`MemoryStats::allocated_peak`] and `reserved_peak`.
pub fn reset_peak_memory(device: usize) -> Result<()> {
    let shim = shim()?;
    // SAFETY: plain call; the shim catches libtorch's exceptions.
    check(shim, unsafe { (shim.reset_peak_memory)(device as i32) })
}

/// Gives the allocator's free cached blocks back to the driver.
pub fn empty_cache() -> Result<()> {
    let shim = shim()?;
    // SAFETY: plain call; the shim catches libtorch's exceptions.
    check(shim, unsafe { (shim.empty_cache)() })
}

/// A captured sequence of CUDA work that [`CudaGraph::replay`] launches again as one unit,
/// reading and writing the same device addresses it was captured with: inputs are copied into
/// the tensors used at capture, outputs read from the tensors produced then. The memory of
/// the captured work stays reserved (a private pool) while the graph lives.
pub struct CudaGraph {
    shim: &'static Shim,
    raw: *mut c_void,
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
        let shim = shim().map_err(Ok)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `raw` receives a new Graph owned by the returned value (or freed by its Drop).
        check(shim, unsafe { (shim.graph_new)(device as i32, &mut raw) }).map_err(Ok)?;
        let graph = Self { shim, raw };
        // SAFETY (all calls below): `graph.raw` is a live Graph made above.
        check(shim, unsafe { (shim.graph_enter_stream)(graph.raw) }).map_err(Ok)?;
        let captured = (|| {
            for _ in 0..warmups {
                work().map_err(Err)?;
            }
            check(shim, unsafe { (shim.graph_capture_begin)(graph.raw) }).map_err(Ok)?;
            let result = work();
            // The capture is ended whatever `work` did, so the stream is usable again.
            let ended = check(shim, unsafe { (shim.graph_capture_end)(graph.raw) });
            let value = result.map_err(Err)?;
            ended.map_err(Ok)?;
            Ok(value)
        })();
        let left = check(shim, unsafe { (shim.graph_leave_stream)(graph.raw) });
        let value = captured?;
        left.map_err(Ok)?;
        Ok((graph, value))
    }

    /// Launches the captured work on the current stream.
    pub fn replay(&self) -> Result<()> {
        // SAFETY: `self.raw` is a live, captured Graph.
        check(self.shim, unsafe { (self.shim.graph_replay)(self.raw) })
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `self.raw` was made by graph_new and is freed once, here.
        unsafe { (self.shim.graph_free)(self.raw) }
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

    /// What the process has mapped (its libraries among them).
    fn mapped() -> String {
        std::fs::read_to_string("/proc/self/maps").unwrap()
    }

    #[test]
    fn cuda_is_loaded_only_when_asked_and_fails_with_a_message_without_a_device() {
        // One test, as loading is once per process.
        assert!(
            !mapped().contains("libtorch_cuda"),
            "libtorch_cuda is mapped before load()"
        );
        assert_eq!(memory_stats(0).err(), Some(CudaError::NotLoaded));
        if !built_with_shim() {
            assert_eq!(load(), Err(CudaError::NotBuilt));
            return;
        }
        load().expect("libtorch_cuda and the shim load even without a GPU");
        assert!(loaded());
        assert!(mapped().contains("libtorch_cuda"));
        // The fallback for systems that refuse to load from a memory file works too, and
        // leaves no file behind.
        open_shim_from_temporary_file().expect("the shim loads from a temporary file");
        let leftover =
            std::env::temp_dir().join(format!("weft-cuda-shim-{}.so", std::process::id()));
        assert!(!leftover.exists(), "{} was left behind", leftover.display());
        if tch::Cuda::is_available() {
            return;
        }
        match memory_stats(0) {
            Err(CudaError::Torch(message)) => {
                eprintln!("memory_stats without a device: {message}");
                assert!(!message.is_empty())
            }
            other => panic!("no device, yet {other:?}"),
        }
        match CudaGraph::capture(0, 0, || Ok::<_, ()>(())) {
            Err(Ok(e)) => eprintln!("capture without a device: {e}"),
            _ => panic!("a graph captured without a device"),
        }
    }
}
