//! `rrhf train`'s TOML configuration: `[model]`, `[data]`, `[loss]`, `[train]`, `[output]`, and the optional
//! `[online]` (online RRHF), `[eval]` (answers to held-out queries, scored while training) and
//! `[reward_model]` (`rrhf train-rm`).
//!
//! Unknown keys are errors (a misspelt key silently falling back to a default is how runs go
//! wrong). `--set section.key=value` overrides a key after the file is read; the value is TOML
//! (`--set train.lr=1e-5`, `--set data.template="none"`), a bare word is taken as a string.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::checkpointing::Checkpointing;
use super::loss_scale::INITIAL_SCALE;
use super::optimizer::AdamWConfig;
use crate::device::DeviceChoice;
use crate::kernels::PairLoss;
use crate::loss::LossConfig;
use crate::model::{LoraConfig, Precision};
use crate::sampling::ResponsePolicy;
use crate::tokenizer::TemplateMode;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub train: TrainSection,
    pub output: OutputSection,
    /// Online RRHF: sample the responses from the policy being trained.
    pub online: Option<OnlineSection>,
    /// Greedy answers to held-out queries, scored by a reward, while the policy trains.
    pub eval: Option<EvalSection>,
    /// Train a reward model on the ranked data instead of a policy (`rrhf train-rm`).
    pub reward_model: Option<RewardModelSection>,
    /// Train LoRA adapters on the projections instead of every weight; the run saves adapters
    /// (PEFT layout), which `rrhf merge` folds into a full model.
    pub lora: Option<LoraConfig>,
}

/// `[reward_model]`: `model.path` (a causal LM, which gets a fresh scalar head, or a reward
/// model) is trained to score each query's responses in the order of their `scores`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelSection {
    /// `logistic` (Bradley-Terry, the usual reward-model loss; the default) or `hinge` (RRHF's
    /// ranking loss on the scores).
    #[serde(default = "logistic")]
    pub pair_loss: PairLoss,
}

fn logistic() -> PairLoss {
    PairLoss::Logistic
}

impl Default for RewardModelSection {
    fn default() -> Self {
        Self {
            pair_loss: logistic(),
        }
    }
}

/// `[online]`: every `resample_every` steps, the queries of the next steps get `sampling.k`
/// fresh responses from the current weights, scored by `reward`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineSection {
    /// `rule:NAME[:key=value,...]`, `command:CMD`, `http(s)://HOST:PORT/PATH` or `model:DIR`
    /// (see `rrhf score`).
    pub reward: String,
    /// Seconds an external scorer or HTTP judge may take per round.
    #[serde(default = "default_reward_timeout")]
    pub reward_timeout_secs: f64,
    /// The environment variable holding the HTTP judge's bearer token (never the token itself:
    /// the config goes into run.json).
    #[serde(default)]
    pub reward_token_env: Option<String>,
    #[serde(default = "one")]
    pub resample_every: usize,
    /// Also rank the data file's own responses (scored by the same reward) with the samples.
    #[serde(default)]
    pub include_data_responses: bool,
    /// Subtract kl_coef * (log p_policy - log p_start) of each response from its reward, so the
    /// policy is held near the model it started from.
    #[serde(default)]
    pub kl_coef: f64,
    /// `[online.sampling]`: the policy, k, max_new_tokens, temperature... as `rrhf sample` takes.
    #[serde(default)]
    pub sampling: ResponsePolicy,
}

/// `[eval]`: before the first step, every `every` steps and after the last, the policy's greedy
/// answers to the `queries`, scored by `reward`: their mean, spread, length, and win rate against
/// the start model's answers (`train/reward_eval.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Held-out queries, in any form `data.train` takes (only the queries are used), read with
    /// `[data]`'s options.
    pub queries: PathBuf,
    /// A reward spec, as `online.reward` and `rrhf eval --reward` take.
    pub reward: String,
    /// Evaluate every N steps (0: only before the first step and after the last).
    #[serde(default)]
    pub every: usize,
    /// Use only the first N queries of the file.
    #[serde(default)]
    pub max_queries: Option<usize>,
    /// Most tokens per answer (128: the paper's evaluation).
    #[serde(default = "default_eval_max_new_tokens")]
    pub max_new_tokens: usize,
    /// How many answers (the first ones) each `samples/eval-<step>.jsonl` holds; absent: all.
    #[serde(default)]
    pub samples: Option<usize>,
    /// Seconds an external scorer or HTTP judge may take per evaluation.
    #[serde(default = "default_reward_timeout")]
    pub reward_timeout_secs: f64,
    /// The environment variable holding the HTTP judge's bearer token.
    #[serde(default)]
    pub reward_token_env: Option<String>,
}

fn default_eval_max_new_tokens() -> usize {
    128
}

fn default_reward_timeout() -> f64 {
    crate::rewards::DEFAULT_TIMEOUT_SECS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Ranked (`query`, `responses`, `scores`), pairwise (`prompt`, `chosen`, `rejected`) or
    /// conversational (`messages`) records, in JSONL or Parquet (by extension).
    pub train: PathBuf,
    pub eval: Option<PathBuf>,
    /// Most tokens of query + response.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Longer queries keep their last tokens.
    pub max_query_length: Option<usize>,
    #[serde(default)]
    pub template: TemplateMode,
    /// A longer line of a data file is an error (memory while reading stays proportional).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Pairwise lines that share a prompt become one ranked query, scored by their wins.
    #[serde(default)]
    pub group_pairs: bool,
    /// The data files' own names for rrhf's fields (`query = "question"`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub columns: crate::data::Columns,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl DataSection {
    /// How `train`, `eval` (and the online queries) are read.
    pub fn read_options(&self) -> crate::data::ReadOptions {
        crate::data::ReadOptions {
            max_line_bytes: self.max_line_bytes,
            columns: self.columns.clone(),
            group_pairs: self.group_pairs,
        }
    }
}

fn default_max_length() -> usize {
    192
}

fn default_max_line_bytes() -> usize {
    crate::data::DEFAULT_MAX_LINE_BYTES
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    #[default]
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub lr: f64,
    /// Passes over the training queries (ignored when `max_steps` is set).
    pub epochs: usize,
    pub max_steps: Option<usize>,
    /// Queries per optimizer step.
    pub queries_per_step: usize,
    /// Micro-batches each step is split into (gradient accumulation).
    pub grad_accum: usize,
    /// Warmup as a number of steps; when absent, `warmup_ratio` of all steps.
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: f64,
    pub schedule: Schedule,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Clip by the global gradient norm over all parameters; 0 disables clipping.
    pub max_grad_norm: f64,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Retired (it was threads of one process): data parallel is one process per device under
    /// MPI (`parallel.rs`). Kept as a key so that an old config is told what to do instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_parallel: Option<toml::Value>,
    /// Recompute activations in the backward pass instead of keeping them: `layer` (or `true`)
    /// keeps only each decoder layer's input, `ops` recomputes the elementwise ops (see
    /// `checkpointing.rs`).
    pub gradient_checkpointing: Checkpointing,
    /// `f32`, or mixed precision: `f16` / `bf16` matmuls on f32 weights (`model/precision.rs`).
    pub precision: Precision,
    /// The starting loss scale of `f16` training (dynamic: halved on overflow, doubled after
    /// 2000 clean updates).
    pub loss_scale: f32,
}

impl TrainSection {
    /// AdamW's settings from this section.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            epochs: 1,
            max_steps: None,
            queries_per_step: 64,
            grad_accum: 1,
            warmup_steps: None,
            warmup_ratio: 0.0,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            max_grad_norm: 1.0,
            seed: 42,
            device: DeviceChoice::Auto,
            data_parallel: None,
            gradient_checkpointing: Checkpointing::Off,
            precision: Precision::F32,
            loss_scale: INITIAL_SCALE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
    /// Save a checkpoint every N steps (0: only the final model).
    #[serde(default)]
    pub save_every: usize,
    /// Evaluate every N steps (0: only after the last step).
    #[serde(default)]
    pub eval_every: usize,
    #[serde(default = "one")]
    pub log_every: usize,
    /// Also write every metrics.jsonl number as a TensorBoard scalar under `<dir>/tensorboard/`.
    #[serde(default)]
    pub tensorboard: bool,
    /// Keep the model of the best evaluation so far in `<dir>/best/`.
    #[serde(default)]
    pub keep_best: Option<KeepBest>,
    /// Keep only the last N `checkpoint-*` directories (`best/` and `final/` are never removed);
    /// absent: keep all.
    #[serde(default)]
    pub save_total_limit: Option<usize>,
}

/// `output.keep_best`: the metric whose best value (lowest loss, highest reward) `best/` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepBest {
    /// `eval_loss` on `data.eval`.
    EvalLoss,
    /// `eval_reward` of `[eval]`.
    EvalReward,
}

impl KeepBest {
    /// The metrics.jsonl key of the metric.
    pub fn key(self) -> &'static str {
        match self {
            Self::EvalLoss => "eval_loss",
            Self::EvalReward => "eval_reward",
        }
    }

    /// Whether `value` beats `best`.
    pub fn improves(self, value: f64, best: f64) -> bool {
        match self {
            Self::EvalLoss => value < best,
            Self::EvalReward => value > best,
        }
    }
}

fn one() -> usize {
    1
}

impl TrainConfig {
    /// Reads `path` and applies `overrides` (`section.key=value`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text, path, overrides)
    }

    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Self> {
        // Deserialising the text itself first gives errors with the line and the key.
        let config: Self =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.with_overrides(path, overrides)
    }

    /// This config with `overrides` (`section.key=value`) applied, checked as a loaded config is;
    /// `origin` (the file it came from) names it in errors.
    pub fn with_overrides(self, origin: &Path, overrides: &[String]) -> Result<Self> {
        if overrides.is_empty() {
            return self.validated(origin);
        }
        let mut table = toml::Table::try_from(&self)
            .with_context(|| format!("{}: cannot apply --set", origin.display()))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let config: Self = toml::Value::Table(table).try_into().map_err(|e| {
            anyhow::anyhow!(
                "{} with --set {}: {e}",
                origin.display(),
                overrides.join(" --set ")
            )
        })?;
        config.validated(origin)
    }

    /// What a run reads, each with what it is: the model, the data files, a reward model.
    pub fn inputs(&self) -> Vec<(&'static str, &Path)> {
        let mut inputs = vec![
            ("model", self.model.path.as_path()),
            ("training data", self.data.train.as_path()),
        ];
        inputs.extend(self.data.eval.as_deref().map(|p| ("eval data", p)));
        inputs.extend(
            self.eval
                .as_ref()
                .map(|e| ("eval queries", e.queries.as_path())),
        );
        let rewards = self.online.iter().map(|o| &o.reward);
        for spec in rewards.chain(self.eval.iter().map(|e| &e.reward)) {
            if let Some(dir) = spec.strip_prefix("model:") {
                inputs.push(("reward model", Path::new(dir)));
            }
        }
        inputs
    }

    /// Every number in its domain, and the sections consistent, before anything is loaded: a
    /// bad value is named by its key here rather than found at some later step.
    fn validated(self, path: &Path) -> Result<Self> {
        match self.invalid() {
            Some((field, why)) => bail!("{}: field `{field}`: {why}", path.display()),
            None => Ok(self),
        }
    }

    /// The first key of `[train]` whose value cannot be used, and why.
    fn invalid_train(&self) -> Option<(String, String)> {
        let t = &self.train;
        let bad = |field: &str, why: &str| Some((field.to_string(), why.to_string()));
        let number_in = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
        if t.data_parallel.is_some() {
            return bad(
                "train.data_parallel",
                "is retired: data parallel is one process per device, launched by MPI; build \
                 with `cargo build --release --features mpi` and run `mpirun -np N rrhf train \
                 --config F` (see \"Data parallel\" in the README)",
            );
        }
        if t.queries_per_step == 0 {
            return bad("train.queries_per_step", "must be at least 1");
        }
        if t.grad_accum == 0 || t.grad_accum > t.queries_per_step {
            return bad(
                "train.grad_accum",
                "must be between 1 and train.queries_per_step",
            );
        }
        if !number_in(t.lr, 0.0, 1.0) {
            return bad(
                "train.lr",
                "must be a number in [0, 1] (AdamW moves every weight by about lr per step)",
            );
        }
        for (field, beta) in [
            ("train.adam_beta1", t.adam_beta1),
            ("train.adam_beta2", t.adam_beta2),
        ] {
            if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
                return bad(field, "must be in [0, 1)");
            }
        }
        if !(t.adam_eps.is_finite() && t.adam_eps > 0.0) {
            return bad("train.adam_eps", "must be a positive number");
        }
        if !number_in(t.weight_decay, 0.0, f64::MAX) {
            return bad("train.weight_decay", "must be a number >= 0");
        }
        if !number_in(t.max_grad_norm, 0.0, f64::MAX) {
            return bad(
                "train.max_grad_norm",
                "must be a number >= 0 (0 disables clipping)",
            );
        }
        if !(t.loss_scale.is_finite() && t.loss_scale >= 1.0) {
            return bad("train.loss_scale", "must be a number of at least 1");
        }
        if !(t.warmup_ratio.is_finite() && (0.0..1.0).contains(&t.warmup_ratio)) {
            return bad("train.warmup_ratio", "must be in [0, 1)");
        }
        if t.max_steps.is_none() && t.epochs == 0 {
            return bad(
                "train.epochs",
                "must be at least 1 (or set train.max_steps)",
            );
        }
        if t.max_steps == Some(0) {
            return bad("train.max_steps", "must be at least 1");
        }
        None
    }

    /// The first key of `[data]` or `[loss]` whose value cannot be used, and why.
    fn invalid_data_and_loss(&self) -> Option<(String, String)> {
        let bad = |field: &str, why: &str| Some((field.to_string(), why.to_string()));
        let number_in = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
        let d = &self.data;
        if d.max_length < 2 {
            return bad("data.max_length", "must be at least 2");
        }
        if let Some(q) = d.max_query_length
            && (q == 0 || q >= d.max_length)
        {
            return bad(
                "data.max_query_length",
                "must be at least 1 and less than data.max_length (a query needs a token, and \
                 leaves room for its response)",
            );
        }
        if d.max_line_bytes == 0 {
            return bad("data.max_line_bytes", "must be at least 1");
        }
        let l = &self.loss;
        for (field, w) in [
            ("loss.rank_weight", l.rank_weight),
            ("loss.ft_weight", l.ft_weight),
        ] {
            if !number_in(w as f64, 0.0, f64::MAX) {
                return bad(field, "must be a number >= 0");
            }
        }
        if !number_in(l.length_penalty as f64, 0.0, 10.0) {
            return bad(
                "loss.length_penalty",
                "must be a number in [0, 10] (1: the mean log-prob, 0: the sum)",
            );
        }
        if l.rank_loss == crate::kernels::PairLoss::Listwise && l.rank_margin != 0.0 {
            return bad(
                "loss.rank_margin",
                "has no meaning for loss.rank_loss = \"listwise\" (a softmax over the ranking, \
                 not a gap): leave it at 0",
            );
        }
        if !number_in(l.rank_margin as f64, 0.0, 1000.0) {
            return bad(
                "loss.rank_margin",
                "must be a number in [0, 1000] (a gap of sequence scores, which are mean log-probs)",
            );
        }
        if l.fused_head && l.head_chunk == 0 {
            return bad(
                "loss.head_chunk",
                "must be at least 1 (vocabulary rows per chunk)",
            );
        }
        None
    }

    /// The first key whose value cannot be used, and why.
    fn invalid(&self) -> Option<(String, String)> {
        if let Some(bad) = self
            .invalid_train()
            .or_else(|| self.invalid_data_and_loss())
        {
            return Some(bad);
        }
        let t = &self.train;
        let bad = |field: &str, why: &str| Some((field.to_string(), why.to_string()));
        let number_in = |x: f64, lo: f64, hi: f64| x.is_finite() && x >= lo && x <= hi;
        if self.output.log_every == 0 {
            return bad("output.log_every", "must be at least 1");
        }
        if self.online.is_some() && self.reward_model.is_some() {
            return bad(
                "reward_model",
                "a reward model trains offline on ranked data; [online] and [reward_model] \
                 cannot both be set",
            );
        }
        if let Some(lora) = &self.lora {
            if self.reward_model.is_some() {
                return bad(
                    "lora",
                    "LoRA trains policies only; a reward model's new score head would need \
                     training outside the adapters",
                );
            }
            if let Some((field, why)) = lora.invalid() {
                return bad(&format!("lora.{field}"), &why);
            }
            if lora.dropout > 0.0 && t.gradient_checkpointing == Checkpointing::Layer {
                return bad(
                    "lora.dropout",
                    "must be 0 with train.gradient_checkpointing = \"layer\": the recomputed \
                     layers would draw new dropout masks (use \"ops\" checkpointing instead)",
                );
            }
        }
        if let Some(online) = &self.online {
            if online.resample_every == 0 {
                return bad("online.resample_every", "must be at least 1");
            }
            if !number_in(online.kl_coef, 0.0, f64::MAX) {
                return bad("online.kl_coef", "must be a number >= 0");
            }
            if let Err(e) = online.sampling.validate() {
                return bad("online.sampling", &e.to_string());
            }
            if let Some(bad) = invalid_reward("online", &online.reward, online.reward_timeout_secs)
            {
                return Some(bad);
            }
        }
        self.invalid_eval_and_output()
    }

    /// The first key of `[eval]` or of `[output]`'s best and limit keys that cannot be used.
    fn invalid_eval_and_output(&self) -> Option<(String, String)> {
        let bad = |field: &str, why: &str| Some((field.to_string(), why.to_string()));
        if let Some(eval) = &self.eval {
            if self.reward_model.is_some() {
                return bad(
                    "eval",
                    "[eval] scores a policy's answers; a reward model (train-rm) writes none",
                );
            }
            if eval.max_new_tokens == 0 {
                return bad("eval.max_new_tokens", "must be at least 1");
            }
            if eval.max_queries == Some(0) {
                return bad("eval.max_queries", "must be at least 1 (or absent: all)");
            }
            if let Some(bad) = invalid_reward("eval", &eval.reward, eval.reward_timeout_secs) {
                return Some(bad);
            }
        }
        let o = &self.output;
        if o.save_total_limit == Some(0) {
            return bad(
                "output.save_total_limit",
                "must be at least 1 (or absent: keep every checkpoint)",
            );
        }
        match o.keep_best {
            Some(KeepBest::EvalLoss) if self.data.eval.is_none() => bad(
                "output.keep_best",
                "\"eval_loss\" is computed only with data.eval (a ranked eval file); set it, \
                 or keep \"eval_reward\" with an [eval] section",
            ),
            Some(KeepBest::EvalReward) if self.eval.is_none() => bad(
                "output.keep_best",
                "\"eval_reward\" is computed only with an [eval] section (queries and a \
                 reward); add one, or keep \"eval_loss\" with data.eval",
            ),
            _ => None,
        }
    }
}

/// A reward spec and its timeout, as `[online]` and `[eval]` both take them (`section` names
/// the keys in the error).
fn invalid_reward(section: &str, spec: &str, timeout_secs: f64) -> Option<(String, String)> {
    if let Err(e) = crate::rewards::check_timeout(timeout_secs) {
        return Some((format!("{section}.reward_timeout_secs"), e.to_string()));
    }
    if let Err(e) = crate::rewards::RewardSpec::parse(spec) {
        return Some((format!("{section}.reward"), format!("{e:#}")));
    }
    None
}

fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected section.key=value"))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, sections) = parts.split_last().unwrap();
    let mut at = table;
    for s in sections {
        at = at
            .entry(s.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("--set {assignment}: `{s}` is not a section"))?;
    }
    at.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[model]\npath = \"m\"\n[data]\ntrain = \"t.jsonl\"\n[output]\ndir = \"out\"\n";

    #[test]
    fn defaults_and_overrides() {
        let c = TrainConfig::parse(MINIMAL, Path::new("c.toml"), &[]).unwrap();
        assert_eq!(
            (c.data.max_length, c.train.lr, c.train.max_grad_norm),
            (192, 2e-5, 1.0)
        );
        let c = TrainConfig::parse(
            MINIMAL,
            Path::new("c.toml"),
            &[
                "train.lr=1e-4".into(),
                "data.template=none".into(),
                "loss.ft_norm=\"sum\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr, 1e-4);
        assert_eq!(c.data.template, TemplateMode::None);
        assert_eq!(c.loss.ft_norm, crate::loss::FtNorm::Sum);
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{e:#}"));
                checked += 1;
            }
        }
        assert!(checked >= 3, "only {checked} configs in {}", dir.display());
        let paper = TrainConfig::load(&dir.join("rrhf-hh-paper.toml"), &[]).unwrap();
        let t = &paper.train;
        assert_eq!(
            (t.lr, t.epochs, t.queries_per_step, t.warmup_ratio),
            (2e-5, 3, 64, 0.03)
        );
        assert_eq!(
            (t.schedule, t.weight_decay, paper.data.max_length),
            (Schedule::Cosine, 0.0, 192)
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let text = format!("{MINIMAL}[train]\nlearning_rate = 1\n");
        let err = TrainConfig::parse(&text, Path::new("c.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml") && err.contains("learning_rate") && err.contains("line 8"),
            "{err}"
        );
        let err = TrainConfig::parse(MINIMAL, Path::new("c.toml"), &["train.nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
