//! Text to tokens and back, with the checkpoint's special tokens and chat template.
//!
//! The tokenisation of RRHF data follows DESIGN.md: the (templated) query is encoded with the
//! tokenizer's own special tokens, and a BOS that both the template and the tokenizer put there
//! appears once; a response is encoded with no special tokens and gets EOS appended.

mod chat_template;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub use chat_template::ChatTemplate;

use crate::model::LlamaConfig;

/// Whether text is wrapped in the checkpoint's chat template.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TemplateMode {
    /// Use the checkpoint's template when it has one, raw text otherwise.
    #[default]
    Auto,
    /// Always raw text.
    None,
}

/// What a model is asked: a plain text (wrapped as one user turn when a chat template is
/// applied), or a conversation whose last turn is the user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// One turn of a conversation, as chat templates read it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl Prompt {
    /// The prompt as text for readers (judges, logs): a plain text as it is, a conversation as
    /// its turns, one `role: content` paragraph each.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Prompt::Text(s) => s.into(),
            Prompt::Chat(turns) => turns
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\n\n")
                .into(),
        }
    }

    /// The prompt's field of a JSONL line, as data files give it: `"query": text`, or
    /// `"messages": [...]`, so a written file reads back as the same prompts.
    pub fn json_field(&self) -> (&'static str, Value) {
        match self {
            Prompt::Text(s) => ("query", Value::String(s.clone())),
            Prompt::Chat(turns) => ("messages", serde_json::json!(turns)),
        }
    }

    /// The JSON object `rest` (responses, scores, answers...) with this prompt's field added.
    pub fn record(&self, mut rest: Value) -> Value {
        let (field, value) = self.json_field();
        rest[field] = value;
        rest
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Self {
        Prompt::Text(text.to_string())
    }
}

/// Which end of a long text the tokens are wanted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Head,
    Tail,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The longest token's text in bytes: what bounds the text that a number of tokens span.
    longest_token: usize,
    template: Option<ChatTemplate>,
    bos: Option<(String, u32)>,
    eos: (String, u32),
    /// Every id that ends generation (EOS, and e.g. LLaMA 3's `<|eot_id|>`).
    stop_ids: Vec<u32>,
}

/// A special-token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn special_token(config: Option<&Value>, key: &str) -> Option<String> {
    match config?.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{}: not valid JSON", path.display()))
}

impl Tokenizer {
    /// Loads `tokenizer.json` and the special tokens and chat template of a checkpoint directory.
    pub fn load(dir: &Path, config: &LlamaConfig) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            bail!(
                "{}: no tokenizer.json (rrhf reads Hugging Face fast tokenizers)",
                dir.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot load the tokenizer: {e}", path.display()))?;
        let size = inner.get_vocab_size(true);
        if size > config.vocab_size {
            bail!(
                "{} has {size} tokens but {} field `vocab_size` is {}: the tokenizer does not belong to this model",
                path.display(),
                dir.join("config.json").display(),
                config.vocab_size
            );
        }
        let tok_config = read_json(&dir.join("tokenizer_config.json"))?;
        let generation = read_json(&dir.join("generation_config.json"))?;
        let id_of = |token: &str, field: &str| -> Result<u32> {
            inner.token_to_id(token).with_context(|| {
                format!(
                    "{} field `{field}` is {token:?}, which is not in tokenizer.json",
                    dir.join("tokenizer_config.json").display()
                )
            })
        };
        let token_of = |id: u32| inner.id_to_token(id);

        let bos = match special_token(tok_config.as_ref(), "bos_token") {
            Some(t) => Some((t.clone(), id_of(&t, "bos_token")?)),
            None => config
                .bos_token_id
                .and_then(|id| token_of(id).map(|t| (t, id))),
        };
        let eos = match special_token(tok_config.as_ref(), "eos_token") {
            Some(t) => (t.clone(), id_of(&t, "eos_token")?),
            None => {
                let id = *config.eos_token_ids.first().with_context(|| {
                    format!(
                        "{}: no EOS token in tokenizer_config.json or config.json",
                        dir.display()
                    )
                })?;
                (token_of(id).unwrap_or_default(), id)
            }
        };
        let mut stop_ids = vec![eos.1];
        stop_ids.extend(&config.eos_token_ids);
        if let Some(g) = generation.as_ref().and_then(|g| g.get("eos_token_id")) {
            let ids: Vec<u32> = match g {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|v| v as u32)
                    .collect(),
                v => v.as_u64().map(|v| v as u32).into_iter().collect(),
            };
            stop_ids.extend(ids);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let template = ChatTemplate::from_dir(dir, tok_config.as_ref())?;
        let longest_token = inner
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1);
        Ok(Self {
            longest_token,
            inner,
            template,
            bos,
            eos,
            stop_ids,
        })
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    pub fn eos_id(&self) -> u32 {
        self.eos.1
    }

    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The query text as the model sees it: templated (per `mode`) but not yet tokenised. A
    /// conversation has no text without a template: that is an error, not a guess at a format.
    pub fn query_text(&self, query: &Prompt, mode: TemplateMode) -> Result<String> {
        let bos = self.bos.as_ref().map_or("", |(s, _)| s.as_str());
        match (&self.template, mode, query) {
            (Some(t), TemplateMode::Auto, Prompt::Text(text)) => {
                let turn = ChatMessage {
                    role: "user".into(),
                    content: text.clone(),
                };
                t.render(&[turn], bos, &self.eos.0)
            }
            (Some(t), TemplateMode::Auto, Prompt::Chat(turns)) => t.render(turns, bos, &self.eos.0),
            (_, _, Prompt::Text(text)) => Ok(text.clone()),
            (None, _, Prompt::Chat(_)) => bail!(
                "the query is a conversation, which the model's chat template renders, and \
                 this model has none (no chat_template.jinja, no `chat_template` in \
                 tokenizer_config.json); add one, or give plain `query` strings"
            ),
            (Some(_), TemplateMode::None, Prompt::Chat(_)) => bail!(
                "the query is a conversation, which the chat template renders, but \
                 data.template (or --template) = \"none\" turns it off; set it to \"auto\""
            ),
        }
    }

    /// Token ids of a query: templated, with the tokenizer's special tokens, BOS at most once.
    pub fn encode_query(&self, query: &Prompt, mode: TemplateMode) -> Result<Vec<u32>> {
        self.encode_query_bounded(query, mode, usize::MAX, Keep::Head)
    }

    /// [`Tokenizer::encode_query`] when the query has at most `limit` tokens; otherwise more than
    /// `limit` tokens of which the first or last `limit` (`keep`) are the query's.
    pub fn encode_query_bounded(
        &self,
        query: &Prompt,
        mode: TemplateMode,
        limit: usize,
        keep: Keep,
    ) -> Result<Vec<u32>> {
        let text = self.query_text(query, mode)?;
        let mut ids = self.encode_bounded(&text, true, limit, keep)?;
        if ids.is_empty() {
            bail!(
                "field `query`: the query has no tokens (it is empty, and this tokenizer adds no \
                 BOS and no template is applied); a response needs something to follow"
            );
        }
        if let Some((_, bos)) = self.bos
            && ids.len() >= 2
            && ids[0] == bos
            && ids[1] == bos
        {
            ids.remove(0);
        }
        Ok(ids)
    }

    /// Token ids of a response: no special tokens, then EOS.
    pub fn encode_response(&self, response: &str) -> Result<Vec<u32>> {
        self.encode_response_truncated(response, usize::MAX)
    }

    /// The first `limit` tokens of [`Tokenizer::encode_response`] (so EOS only when all fits).
    pub fn encode_response_truncated(&self, response: &str, limit: usize) -> Result<Vec<u32>> {
        let mut ids = self.encode_bounded(response, false, limit, Keep::Head)?;
        ids.push(self.eos.1);
        ids.truncate(limit);
        Ok(ids)
    }

    /// The tokens of `text` when they are at most `limit`; otherwise more than `limit` tokens
    /// whose first (`Keep::Head`) or last (`Keep::Tail`) `limit` are the whole text's. Only a
    /// window of the text at that end is tokenised, one several times longer than `limit` tokens
    /// can span, so a huge text costs what its window costs (tokenisation takes some 200 bytes
    /// per byte of text). Text beyond the window changes only the tokens at the window's far
    /// edge, which are cut off.
    fn encode_bounded(
        &self,
        text: &str,
        add_special_tokens: bool,
        limit: usize,
        keep: Keep,
    ) -> Result<Vec<u32>> {
        let window = limit
            .saturating_add(2)
            .saturating_mul(self.longest_token)
            .saturating_mul(4)
            .max(1 << 12);
        if text.len() > window {
            let piece = match keep {
                Keep::Head => &text[..text.floor_char_boundary(window)],
                Keep::Tail => &text[text.ceil_char_boundary(text.len() - window)..],
            };
            let ids = self.encode(piece, add_special_tokens)?;
            // A normaliser that drops much of the text could leave the window short of tokens:
            // then only the whole text tells.
            if ids.len() > limit {
                return Ok(ids);
            }
        }
        self.encode(text, add_special_tokens)
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
    }

    /// A generated response as text: special tokens (the stop token) dropped, whitespace
    /// trimmed, as it is written to sample files, scored and re-tokenised for training.
    pub fn response_text(&self, ids: &[u32]) -> Result<String> {
        Ok(self.decode(ids, true)?.trim().to_string())
    }
}
