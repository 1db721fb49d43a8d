//! One record of a data file (a JSONL line or a Parquet row) as a query with its responses.
//!
//! The forms, each checked field by field, every error naming the field as the file spells it:
//! - ranked: `{"query": str, "responses": [str, ...], "scores": [number, ...]}` (RRHF's own);
//! - pairwise: `{"prompt": str, "chosen": str, "rejected": str}` (scores 1 and 0);
//! - a conversation: `{"messages": [{"role", "content"}, ...], "responses": [...], "scores":
//!   [...]}`: the turns up to the last user turn are the query (rendered by the chat template),
//!   each response the next assistant turn; a final assistant turn, when there is one and no
//!   `responses`, is the only response;
//! - TRL's conversational preference: `{"prompt": [turns], "chosen": [turns], "rejected":
//!   [turns]}`, each of chosen and rejected one assistant turn; or, without `prompt`, chosen and
//!   rejected as whole conversations that share everything but their last (assistant) turn.
//!
//! `[data.columns]` renames the fields (`query = "question"`): the file's names are looked up,
//! and named in messages.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::QueryLine;
use crate::tokenizer::{ChatMessage, Prompt};

/// The file's own name for each field rrhf reads, where it differs (`[data.columns]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    pub query: Option<String>,
    pub prompt: Option<String>,
    pub responses: Option<String>,
    pub scores: Option<String>,
    pub chosen: Option<String>,
    pub rejected: Option<String>,
    pub messages: Option<String>,
}

impl Columns {
    /// The file's name of rrhf's field `field`.
    pub(super) fn name<'a>(&'a self, field: &'a str) -> &'a str {
        let mapped = match field {
            "query" => &self.query,
            "prompt" => &self.prompt,
            "responses" => &self.responses,
            "scores" => &self.scores,
            "chosen" => &self.chosen,
            "rejected" => &self.rejected,
            "messages" => &self.messages,
            _ => &None,
        };
        mapped.as_deref().unwrap_or(field)
    }
}

/// Reads a record in any of the forms above; `number` is its line or row.
pub fn parse_query_record(value: &Value, columns: &Columns, number: usize) -> Result<QueryLine> {
    let Value::Object(obj) = value else {
        bail!("expected a JSON object, got {}", kind(value));
    };
    let r = Record { obj, columns };
    let given = |f: &'static str| r.has(f).then(|| r.name(f));
    if let (Some(a), Some(b)) = (given("query"), given("prompt")) {
        bail!("fields `{a}` and `{b}` are both given: which is the query? keep one");
    }
    let pairwise = given("chosen").or(given("rejected"));
    let ranked = given("responses").or(given("scores"));
    if let (Some(p), Some(q)) = (pairwise, ranked) {
        bail!(
            "fields `{q}` and `{p}` are both given: a line is either ranked (responses, scores) \
             or pairwise (chosen, rejected), not both"
        );
    }
    if let (Some(m), Some(q)) = (given("messages"), given("query").or(given("prompt"))) {
        bail!("fields `{m}` and `{q}` are both given: the conversation is the query; keep one");
    }
    if let (Some(m), Some(p)) = (given("messages"), pairwise) {
        bail!(
            "fields `{m}` and `{p}` are both given: a pairwise line's query is `{}`",
            r.name("prompt")
        );
    }
    let (query, responses, scores) = match pairwise.is_some() {
        true => r.pairwise()?,
        false => r.ranked()?,
    };
    Ok(QueryLine {
        query,
        responses,
        scores,
        line: number,
        pairwise: pairwise.is_some(),
    })
}

type Parsed = (Prompt, Vec<String>, Option<Vec<f64>>);

/// A record's fields, looked up under the file's names.
struct Record<'a> {
    obj: &'a Map<String, Value>,
    columns: &'a Columns,
}

impl Record<'_> {
    fn name<'b>(&'b self, field: &'b str) -> &'b str {
        self.columns.name(field)
    }

    fn has(&self, field: &str) -> bool {
        self.obj.contains_key(self.name(field))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(self.name(field))
    }

    fn missing(&self, field: &str) -> anyhow::Error {
        anyhow::anyhow!("field `{}` is missing", self.name(field))
    }

    /// Ranked lines, conversations, and bare queries (a query file's lines).
    fn ranked(&self) -> Result<Parsed> {
        let (query, final_reply) = match self.get("messages") {
            Some(v) => {
                let (prompt, reply) = split_conversation(v, self.name("messages"))?;
                (Prompt::Chat(prompt), reply)
            }
            None => (self.prompt_field()?, None),
        };
        let mut responses = match self.get("responses") {
            Some(v) => responses_of(v, self.name("responses"))?,
            None => vec![],
        };
        if let Some(reply) = final_reply {
            if self.has("responses") {
                bail!(
                    "field `{}`: it ends with an assistant turn and `{}` is given too; the \
                     responses are the turns that follow the last user turn: drop one",
                    self.name("messages"),
                    self.name("responses")
                );
            }
            responses.push(reply);
        }
        let scores = match self.get("scores") {
            Some(v) => Some(scores_of(v, self.name("scores"))?),
            None => None,
        };
        if let Some(scores) = &scores
            && scores.len() != responses.len()
        {
            bail!(
                "field `{}`: {} scores for {} responses",
                self.name("scores"),
                scores.len(),
                responses.len()
            );
        }
        Ok((query, responses, scores))
    }

    /// `query` or `prompt`: a string, or a conversation ending in a user turn.
    fn prompt_field(&self) -> Result<Prompt> {
        let field = match self.has("prompt") {
            true => "prompt",
            false => "query",
        };
        let name = self.name(field);
        match self.get(field) {
            Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
            Some(v @ Value::Array(_)) => {
                let (prompt, reply) = split_conversation(v, name)?;
                match reply {
                    Some(_) => bail!(
                        "field `{name}`: the conversation ends with an assistant turn; a query \
                         ends with the user's turn"
                    ),
                    None => Ok(Prompt::Chat(prompt)),
                }
            }
            Some(other) => bail!(
                "field `{name}`: expected a string or a list of turns, got {}",
                kind(other)
            ),
            None => Err(self.missing(field)),
        }
    }

    /// `chosen` and `rejected`, as strings or as turns (TRL's conversational form).
    fn pairwise(&self) -> Result<Parsed> {
        let chosen = self.get("chosen").ok_or_else(|| self.missing("chosen"))?;
        let rejected = self
            .get("rejected")
            .ok_or_else(|| self.missing("rejected"))?;
        let implicit = !self.has("prompt") && !self.has("query") && chosen.is_array();
        let (query, chosen, rejected) = match implicit {
            true => self.implicit_prompt(chosen, rejected)?,
            false => (
                self.prompt_field()?,
                reply_of(chosen, self.name("chosen"))?,
                reply_of(rejected, self.name("rejected"))?,
            ),
        };
        Ok((query, vec![chosen, rejected], Some(vec![1.0, 0.0])))
    }

    /// TRL's implicit prompt: two whole conversations whose shared turns are the query.
    fn implicit_prompt(
        &self,
        chosen: &Value,
        rejected: &Value,
    ) -> Result<(Prompt, String, String)> {
        let (c_prompt, c_reply) = split_conversation(chosen, self.name("chosen"))?;
        let (r_prompt, r_reply) = split_conversation(rejected, self.name("rejected"))?;
        let ends = |reply: Option<String>, field: &str| {
            reply.ok_or_else(|| {
                anyhow::anyhow!(
                    "field `{}`: without `{}`, it is a whole conversation and must end with the \
                     assistant's turn",
                    self.name(field),
                    self.name("prompt")
                )
            })
        };
        let (c_reply, r_reply) = (ends(c_reply, "chosen")?, ends(r_reply, "rejected")?);
        if c_prompt != r_prompt {
            bail!(
                "fields `{}` and `{}`: without `{}`, they must be the same conversation up to \
                 the last assistant turn, and they differ before it",
                self.name("chosen"),
                self.name("rejected"),
                self.name("prompt")
            );
        }
        Ok((Prompt::Chat(c_prompt), c_reply, r_reply))
    }
}

/// A conversation's turns up to its last user turn, and the assistant turn after it if any.
fn split_conversation(value: &Value, name: &str) -> Result<(Vec<ChatMessage>, Option<String>)> {
    let turns = turns_of(value, name)?;
    let Some(last_user) = turns.iter().rposition(|t| t.role == "user") else {
        bail!("field `{name}`: no turn has role \"user\"; a query needs the user's turn");
    };
    let after = &turns[last_user + 1..];
    let reply = match after {
        [] => None,
        [t] if t.role == "assistant" => Some(t.content.clone()),
        _ => bail!(
            "field `{name}`: after the last user turn comes {}; only one assistant turn may \
             follow it (the response)",
            after
                .iter()
                .map(|t| format!("a \"{}\" turn", t.role))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut prompt = turns;
    prompt.truncate(last_user + 1);
    Ok((prompt, reply))
}

/// A list of `{"role": str, "content": str}` turns.
fn turns_of(value: &Value, name: &str) -> Result<Vec<ChatMessage>> {
    let Value::Array(items) = value else {
        bail!(
            "field `{name}`: expected a list of turns, got {}",
            kind(value)
        );
    };
    if items.is_empty() {
        bail!("field `{name}`: the list of turns is empty");
    }
    items
        .iter()
        .enumerate()
        .map(|(j, item)| turn_of(item, &format!("{name}[{j}]")))
        .collect()
}

fn turn_of(item: &Value, at: &str) -> Result<ChatMessage> {
    let Value::Object(turn) = item else {
        bail!(
            "field `{at}`: expected a turn {{\"role\": ..., \"content\": ...}}, got {}",
            kind(item)
        );
    };
    let text = |key: &str| match turn.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!("field `{at}.{key}`: expected a string, got {}", kind(other)),
        None => bail!("field `{at}.{key}` is missing"),
    };
    let role = text("role")?;
    if !["system", "user", "assistant"].contains(&role.as_str()) {
        bail!(
            "field `{at}.role`: {role:?} is not a role chat templates know; use \"system\", \
             \"user\" or \"assistant\""
        );
    }
    Ok(ChatMessage {
        role,
        content: text("content")?,
    })
}

/// `responses`: strings, or assistant turns.
fn responses_of(value: &Value, name: &str) -> Result<Vec<String>> {
    let Value::Array(items) = value else {
        bail!(
            "field `{name}`: expected a list of strings, got {}",
            kind(value)
        );
    };
    if items.is_empty() {
        bail!("field `{name}`: the list is empty");
    }
    items
        .iter()
        .enumerate()
        .map(|(j, v)| reply_of(v, &format!("{name}[{j}]")))
        .collect()
}

/// One response: a string, an assistant turn, or a list holding one assistant turn.
fn reply_of(value: &Value, name: &str) -> Result<String> {
    let (turn, name) = match value {
        Value::String(s) => return Ok(s.clone()),
        Value::Object(_) => (turn_of(value, name)?, name.to_string()),
        Value::Array(items) if items.len() == 1 => {
            let at = format!("{name}[0]");
            (turn_of(&items[0], &at)?, at)
        }
        Value::Array(items) => bail!(
            "field `{name}`: {} turns; a response is one assistant turn",
            items.len()
        ),
        other => bail!("field `{name}`: expected a string, got {}", kind(other)),
    };
    match turn.role.as_str() {
        "assistant" => Ok(turn.content),
        role => bail!("field `{name}`: a response is the assistant's turn, not {role:?}'s"),
    }
}

fn scores_of(value: &Value, name: &str) -> Result<Vec<f64>> {
    let Value::Array(items) = value else {
        bail!(
            "field `{name}`: expected a list of numbers, got {}",
            kind(value)
        );
    };
    items
        .iter()
        .enumerate()
        .map(|(j, v)| match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => bail!("field `{name}[{j}]`: expected a finite number, got {v}"),
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(line: &str, columns: &Columns) -> Result<QueryLine> {
        let value: Value = serde_json::from_str(line)?;
        parse_query_record(&value, columns, 1)
    }

    fn parse(line: &str) -> Result<QueryLine> {
        parse_with(line, &Columns::default())
    }

    fn err(line: &str) -> String {
        format!("{:#}", parse(line).unwrap_err())
    }

    fn turn(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert!(
            err(r#"{"query": "q", "responses": [], "scores": []}"#)
                .contains("`responses`: the list is empty")
        );
        assert!(
            err(r#"{"query": "q", "responses": ["a"], "scores": [1, 2]}"#)
                .contains("2 scores for 1 responses")
        );
        assert!(
            err(r#"{"query": "q", "responses": ["a"], "scores": [null]}"#).contains("`scores[0]`")
        );
        assert!(err(r#"{"responses": ["a"], "scores": [1]}"#).contains("`query` is missing"));
        let pair = parse(r#"{"prompt": "p", "chosen": "c", "rejected": "r"}"#).unwrap();
        assert_eq!(
            (pair.responses.len(), pair.scores.clone(), pair.reference()),
            (2, Some(vec![1.0, 0.0]), Some("c"))
        );
        assert!(pair.pairwise);
        let bare = parse(r#"{"query": "q"}"#).unwrap();
        assert_eq!(
            (bare.responses.len(), bare.scores.clone(), bare.reference()),
            (0, None, None)
        );
    }

    #[test]
    fn a_conversation_is_the_query_up_to_the_last_user_turn() {
        let line = parse(
            r#"{"messages": [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "2+2?"}],
                "responses": ["4", {"role": "assistant", "content": "five"}], "scores": [1, 0]}"#,
        )
        .unwrap();
        assert_eq!(
            line.query,
            Prompt::Chat(vec![
                turn("system", "be brief"),
                turn("user", "hi"),
                turn("assistant", "hello"),
                turn("user", "2+2?")
            ])
        );
        assert_eq!(line.responses, vec!["4", "five"]);
        // A final assistant turn is the response when no `responses` are given.
        let sft = parse(
            r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
        )
        .unwrap();
        assert_eq!(
            (sft.query, sft.responses),
            (
                Prompt::Chat(vec![turn("user", "hi")]),
                vec!["yo".to_string()]
            )
        );
    }

    #[test]
    fn conversation_errors_name_the_turn() {
        assert!(
            err(r#"{"messages": [{"role": "assistant", "content": "x"}]}"#)
                .contains("no turn has role \"user\"")
        );
        assert!(
            err(r#"{"messages": [{"role": "user", "content": 3}]}"#)
                .contains("field `messages[0].content`: expected a string, got a number")
        );
        assert!(
            err(r#"{"messages": [{"role": "robot", "content": "x"}]}"#)
                .contains("`messages[0].role`: \"robot\"")
        );
        assert!(
            err(
                r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "responses": ["c"]}"#
            )
            .contains("ends with an assistant turn and `responses` is given too")
        );
        assert!(
            err(r#"{"messages": [{"role": "user", "content": "a"}], "query": "b"}"#)
                .contains("both given")
        );
        assert!(
            err(r#"{"prompt": [{"role": "user", "content": "a"}],
                "chosen": [{"role": "user", "content": "b"}], "rejected": "c"}"#)
            .contains("`chosen[0]`: a response is the assistant's turn, not \"user\"'s")
        );
    }

    #[test]
    fn trl_conversational_preferences() {
        let explicit = parse(
            r#"{"prompt": [{"role": "user", "content": "sky?"}],
                "chosen": [{"role": "assistant", "content": "blue"}],
                "rejected": [{"role": "assistant", "content": "green"}]}"#,
        )
        .unwrap();
        let implicit = parse(
            r#"{"chosen": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}],
                "rejected": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "green"}]}"#,
        )
        .unwrap();
        for line in [&explicit, &implicit] {
            assert_eq!(line.query, Prompt::Chat(vec![turn("user", "sky?")]));
            assert_eq!(line.responses, vec!["blue", "green"]);
            assert_eq!(line.scores, Some(vec![1.0, 0.0]));
        }
        let differ = err(
            r#"{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "rejected": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "c"}]}"#,
        );
        assert!(differ.contains("they differ before it"), "{differ}");
    }

    #[test]
    fn columns_rename_fields_and_errors_use_the_file_names() {
        let columns = Columns {
            query: Some("question".into()),
            responses: Some("answers".into()),
            scores: Some("ratings".into()),
            ..Columns::default()
        };
        let line = parse_with(
            r#"{"question": "q", "answers": ["a", "b"], "ratings": [2, 1]}"#,
            &columns,
        )
        .unwrap();
        assert_eq!(line.query, Prompt::Text("q".into()));
        assert_eq!(line.scores, Some(vec![2.0, 1.0]));
        let e = format!(
            "{:#}",
            parse_with(
                r#"{"question": "q", "answers": ["a"], "ratings": [1, 2]}"#,
                &columns
            )
            .unwrap_err()
        );
        assert!(
            e.contains("field `ratings`: 2 scores for 1 responses"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse_with(r#"{"answers": ["a"], "ratings": [1]}"#, &columns).unwrap_err()
        );
        assert!(e.contains("field `question` is missing"), "{e}");
    }
}
