//! Build facts that `run.json` records: rrhf's git commit, and the versions of burn, cubecl and
//! wgpu that Cargo.lock pins. Without git (a source tarball) the commit reads `unknown`; built
//! from a tree whose sources differ from the commit, it ends in `-dirty`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    // A new commit moves the branch's ref (or HEAD itself, detached).
    for path in ["HEAD", "refs/heads"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(p) = git(&["rev-parse", "--symbolic-full-name", "HEAD"])
        .and_then(|r| git(&["rev-parse", "--git-path", &r]))
    {
        println!("cargo:rerun-if-changed={p}");
    }
    // What the binary is built from: an edit here changes what `-dirty` says.
    const SOURCES: [&str; 5] = ["src", "vendor", "Cargo.toml", "Cargo.lock", "build.rs"];
    for path in SOURCES {
        println!("cargo:rerun-if-changed={path}");
    }
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(SOURCES);
    let dirty = git(&status).is_some_and(|s| !s.is_empty());
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(c) if dirty => format!("{c}-dirty"),
        Some(c) => c,
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=RRHF_GIT_COMMIT={commit}");

    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut versions = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_string());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && ["burn", "cubecl", "wgpu"].contains(&n.as_str())
        {
            versions.push(format!("{n}={}", v.trim_matches('"')));
        }
    }
    println!(
        "cargo:rustc-env=RRHF_LOCKED_VERSIONS={}",
        versions.join(",")
    );
}
