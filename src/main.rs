use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_display_probes();
    reuse_freed_buffers();
    let _mpi = rrhf::parallel::init();
    match rrhf::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Under MPI, one rank's error ends every rank (no hang in a collective).
            rrhf::parallel::world().abort_job_on(&e);
            // The whole context chain, without a backtrace: what failed, and in which file/field.
            eprintln!("error: {e:#}");
            // `rrhf compare` tells "differ" (1) from "cannot compare" (2), as diff and cmp do.
            if e.downcast_ref::<rrhf::compare::Incomparable>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Vulkan drivers probe for a Wayland display when the instance is created and, on a headless
/// machine without XDG_RUNTIME_DIR, print "error: XDG_RUNTIME_DIR is invalid" several times,
/// which reads like one of our errors. Pointing it at the temp dir makes the probe fail quietly.
fn quiet_display_probes() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

/// glibc serves every allocation over its mmap threshold (at most 32 MiB, however it adapts) with
/// fresh pages from the kernel and returns them on free, so each of the CPU path's large
/// activations and gradients (a SmolLM2 step makes hundreds) is zeroed page by page again: 4-10%
/// of a step's CPU time in `perf`. Serving them from the heap, and not trimming it, reuses the
/// freed buffers instead. The peak resident set stays the same (the bench's `peak_mem_mib`).
fn reuse_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const ONE_GIB: libc::c_int = 1 << 30;
        // SAFETY: mallopt only sets allocator parameters; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, ONE_GIB);
            libc::mallopt(libc::M_TRIM_THRESHOLD, ONE_GIB);
        }
    }
}
