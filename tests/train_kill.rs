//! A run killed (SIGKILL) while it writes checkpoints leaves every checkpoint it shows loadable,
//! and resumes from the newest.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TINY_CONFIG, newest_checkpoint, rrhf, rrhf_command, scratch};
use serde_json::Value;

#[test]
fn kill_during_checkpoint_writes_keeps_checkpoints_loadable() {
    let dir = scratch("train-kill");
    let out = dir.join("out");
    // A checkpoint after every step, so kills land during writes.
    for delay_ms in [150, 260, 370, 480, 590] {
        let mut child = rrhf_command([
            "train",
            "--config",
            TINY_CONFIG,
            "--set",
            "output.save_every=1",
            "--set",
        ])
        .arg(format!("output.dir={:?}", out.display().to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("checkpoint-") {
                rrhf::checkpoint::load_model(&entry.path(), &burn::tensor::Device::flex())
                    .unwrap_or_else(|e| panic!("{name} after kill at {delay_ms} ms: {e:#}"));
                let state =
                    std::fs::read_to_string(entry.path().join("trainer_state.json")).unwrap();
                serde_json::from_str::<Value>(&state).unwrap();
            }
        }
    }
    // And a resumed run from the newest checkpoint finishes.
    let newest = newest_checkpoint(&out).expect("some checkpoint survived");
    let resumed = rrhf(&[
        "train",
        "--config",
        TINY_CONFIG,
        "--set",
        &format!("output.dir={:?}", out.display().to_string()),
        "--resume",
        out.join(format!("checkpoint-{newest}")).to_str().unwrap(),
    ]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
}
