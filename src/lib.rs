//! rrhf: align LLaMA-family language models with human preferences by RRHF (Yuan et al. 2023),
//! on any GPU wgpu reaches, or on the CPU.
//!
//! One module per stage of the data flow: `model` (the LLaMA), `checkpoint` (Hugging Face
//! directories and GGUF import), `tokenizer` (tokens and chat templates), `data` (batches),
//! `kernels` (sequence log-prob and ranking reductions), `scoring` (a batch through the model to sequence scores), `loss` (the RRHF loss), `sampling`
//! (generation and the k-response policies), `rewards` (rules, external scorers, reward models),
//! `train` (the RRHF and reward-model trainer, offline and online), `eval` (held-out reward and
//! win rate), `compare` (do two runs agree), `plot` (a PNG of a run's metrics), `bench` (speed and memory figures), `device` (where
//! tensors live) and `cli`.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod data;
pub mod device;
pub mod eval;
pub mod kernels;
pub mod loss;
pub mod model;
pub mod parallel;
pub mod plot;
pub mod progress;
pub mod rewards;
pub mod sampling;
pub mod scoring;
pub mod tokenizer;
pub mod train;
