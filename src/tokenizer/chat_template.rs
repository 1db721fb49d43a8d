//! Chat templates: the checkpoint's own Jinja template, rendered with minijinja the way
//! transformers' `apply_chat_template` renders it (trim_blocks, lstrip_blocks, Python string
//! methods, `raise_exception`).

use std::path::Path;

use anyhow::{Context, Result};
use minijinja::{Environment, Error, ErrorKind, context};
use serde_json::Value;

use super::ChatMessage;

pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from, for error messages.
    origin: String,
}

impl ChatTemplate {
    pub fn new(source: String, origin: String) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source)
            .with_context(|| format!("{origin}: the chat template does not parse"))?;
        Ok(Self { env, origin })
    }

    /// The template of a checkpoint directory: `chat_template.jinja`, or the `chat_template`
    /// field of `tokenizer_config.json` (a string, or a list of named templates).
    pub fn from_dir(dir: &Path, tokenizer_config: Option<&Value>) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            let source = std::fs::read_to_string(&jinja)
                .with_context(|| format!("cannot read {}", jinja.display()))?;
            return Self::new(source, jinja.display().to_string()).map(Some);
        }
        let origin = format!(
            "{} field `chat_template`",
            dir.join("tokenizer_config.json").display()
        );
        let source = match tokenizer_config.and_then(|c| c.get("chat_template")) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .with_context(|| format!("{origin}: a list without a template named \"default\""))?
                .to_string(),
            Some(other) => anyhow::bail!("{origin}: expected a string, found {other}"),
        };
        Self::new(source, origin).map(Some)
    }

    /// The prompt of a conversation (its turns up to the last user turn), ready for the
    /// assistant's answer.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let template = self.env.get_template("chat").expect("added in new()");
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => bos_token,
                eos_token => eos_token,
            })
            .with_context(|| format!("{}: rendering the chat template failed", self.origin))
    }
}

/// `strftime_now(format)` as transformers provides it to templates (LLaMA 3.1 prints the date),
/// for the directives those templates use: %d, %m, %Y, %b, %B.
fn strftime_now(format: String) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(m - 1) as usize];
    format
        .replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%b", &month[..3])
        .replace("%B", month)
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(content: &str) -> Vec<ChatMessage> {
        vec![ChatMessage {
            role: "user".into(),
            content: content.into(),
        }]
    }

    #[test]
    fn chatml_with_python_methods() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n{% endfor %}\
             {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
                .into(),
            "test".into(),
        )
        .unwrap();
        let out = t.render(&user("  Hi  "), "<s>", "</s>").unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new(
            "{{ raise_exception('no system role') }}".into(),
            "test".into(),
        )
        .unwrap();
        let err = format!("{:#}", t.render(&user("x"), "", "").unwrap_err());
        assert!(err.contains("no system role"), "{err}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}
