//! How the C allocator serves tensor memory on the host (glibc): freed tensor buffers stay in
//! the heap for the next step instead of going back to the kernel, and go back once the device
//! worker is idle.
//!
//! Why: libtorch allocates every buffer over a few MB with `posix_memalign`, and glibc serves
//! those from a fresh `mmap` and `munmap`s them on free (always above 32 MB). A UNet step on CPU
//! allocates and frees the same buffers each call — oneDNN reorders a 1280-channel conv's
//! 59 MB of weights into a new buffer every call — so each step page-faulted and zeroed about
//! as much memory as the weights: an SD1.5-shaped 64×64 sampler spent 55% of its time in the
//! kernel (perf, 2026-12-02). Keeping freed memory in one heap removes that and changes no
//! number the model computes.

/// Makes freed memory stay in the process for reuse: no `mmap` per large allocation, no trim of
/// the heap top on `free`, and one arena, so that the device worker thread's buffers come from
/// the same heap as everyone's (a thread's own arena would still `mmap` anything over 64 MB).
/// Call first thing in `main`, before any thread exists: the arena limit is read when a thread
/// first allocates. The device worker returns memory with [`release_free_memory`] once it has
/// been idle for a moment after a run.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's allocator parameters; it is called before other threads
    // exist and its return value (0 on an invalid parameter) leaves the defaults in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Gives the heap's free pages back to the kernel (`malloc_trim`), so an idle server or
/// watcher holds only what its cache and models hold.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's free lists under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
