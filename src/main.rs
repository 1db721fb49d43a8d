use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_display_probes();
    match rrhf::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole context chain, without a backtrace: what failed, and in which file/field.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
