//! Training checkpoints: the model in the Hugging Face layout, plus what exact resumption needs:
//! the AdamW moments (`optimizer.safetensors`) and `trainer_state.json` (the step, which fixes
//! both the learning rate and the data position, and the seed that fixes the data order).
//!
//! A checkpoint directory is written under a temporary name and renamed into place, so a crash
//! or `kill -9` during the write leaves the previous checkpoints untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};

use super::loss_scale::LossScale;
use super::optimizer::AdamW;
use crate::checkpoint::{SaveDtype, write_dir_atomically, write_model_files};
use crate::model::Llama;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    pub seed: u64,
    pub queries_per_step: usize,
    pub train_queries: usize,
    /// The dynamic loss scale of an f16 run.
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
    /// `output.keep_best`: the best evaluation up to this step (what `best/` holds), so that a
    /// resumed run knows what it has to beat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestSoFar>,
}

/// The best value of the `output.keep_best` metric so far, and the step it was measured at.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestSoFar {
    pub metric: String,
    pub step: usize,
    pub value: f64,
}

/// What a checkpoint must share with the config that resumes it for the data order and the
/// schedule to continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunIdentity {
    pub seed: u64,
    pub queries_per_step: usize,
    pub train_queries: usize,
    pub total_steps: usize,
}

impl TrainerState {
    pub fn identity(&self) -> RunIdentity {
        RunIdentity {
            seed: self.seed,
            queries_per_step: self.queries_per_step,
            train_queries: self.train_queries,
            total_steps: self.total_steps,
        }
    }
}

pub fn checkpoint_dir(output: &Path, step: usize) -> PathBuf {
    output.join(format!("checkpoint-{step}"))
}

/// The step of a `checkpoint-N` name ([`checkpoint_dir`]'s), `None` for any other name.
pub fn checkpoint_step(name: &str) -> Option<usize> {
    name.strip_prefix("checkpoint-")?.parse().ok()
}

/// The steps of the `checkpoint-N` directories in `output`, in increasing order.
pub fn checkpoint_steps(output: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(output)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| checkpoint_step(e.file_name().to_str()?))
        .collect();
    steps.sort_unstable();
    steps
}

/// `output.save_total_limit`: once the checkpoint of step `saved` is written, removes all but the
/// last `keep` checkpoints up to it. Checkpoints past `saved` (left by a run that went on after
/// the checkpoint this one resumed from) are this run's to overwrite, not to count, and `spare`
/// (the checkpoint the run reads its tokenizer from) is never removed.
pub fn prune_checkpoints(output: &Path, keep: usize, saved: usize, spare: &Path) -> Result<()> {
    let upto: Vec<usize> = checkpoint_steps(output)
        .into_iter()
        .filter(|&s| s <= saved)
        .collect();
    let spare = crate::checkpoint::outputs::resolved(spare);
    for &step in &upto[..upto.len().saturating_sub(keep)] {
        let dir = checkpoint_dir(output, step);
        if crate::checkpoint::outputs::resolved(&dir) != spare {
            crate::checkpoint::outputs::remove_dir_atomically(&dir)?;
        }
    }
    Ok(())
}

pub fn save_checkpoint(
    dir: &Path,
    model: &Llama,
    optimizer: &AdamW,
    state: &TrainerState,
    tokenizer_from: &Path,
) -> Result<()> {
    write_dir_atomically(dir, |tmp| {
        write_model_files(model, Some(tokenizer_from), tmp, SaveDtype::F32)?;
        write_moments(&tmp.join(OPTIMIZER_FILE), optimizer)?;
        std::fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(state)?)?;
        Ok(())
    })
    .with_context(|| format!("cannot write checkpoint {}", dir.display()))
}

fn write_moments(path: &Path, optimizer: &AdamW) -> Result<()> {
    let mut host: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for (kind, moments) in [("first", &optimizer.first), ("second", &optimizer.second)] {
        for (i, m) in moments.iter().enumerate() {
            let values = crate::device::to_host(m.clone())?;
            let n = values.len();
            host.push((
                format!("{kind}.{i}"),
                bytemuck::cast_slice(&values).to_vec(),
                n,
            ));
        }
    }
    let views: Vec<(String, TensorView)> = host
        .iter()
        .map(|(name, bytes, n)| Ok((name.clone(), TensorView::new(Dtype::F32, vec![*n], bytes)?)))
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("steps".to_string(), optimizer.steps.to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)?;
    Ok(())
}

/// Reads the trainer state and the optimizer moments of a checkpoint into `optimizer`.
/// The trainer state of the checkpoint `dir` (its step, seed, loss scale, best evaluation).
pub fn read_trainer_state(dir: &Path) -> Result<TrainerState> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).with_context(|| {
        format!(
            "{}: not a training checkpoint (no {STATE_FILE})",
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}: unreadable", state_path.display()))
}

pub fn load_checkpoint_state(
    dir: &Path,
    optimizer: &mut AdamW,
    device: &Device,
) -> Result<TrainerState> {
    let state = read_trainer_state(dir)?;
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let steps = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("steps"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{}: metadata field `steps` is missing", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let read = |name: &str| -> Result<Tensor<1>> {
        let view = file
            .tensor(name)
            .with_context(|| format!("{}: tensor `{name}` is missing", path.display()))?;
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor `{name}` is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        let n = values.len();
        Ok(Tensor::from_data(TensorData::new(values, [n]), device))
    };
    let count = file
        .names()
        .iter()
        .filter(|n| n.starts_with("first."))
        .count();
    optimizer.first = (0..count)
        .map(|i| read(&format!("first.{i}")))
        .collect::<Result<_>>()?;
    optimizer.second = (0..count)
        .map(|i| read(&format!("second.{i}")))
        .collect::<Result<_>>()?;
    optimizer.steps = steps;
    Ok(state)
}
