//! Built-in verifiable rewards, named `rule:NAME[:key=value,...]`:
//!
//! - `length[:max_words=N]` (N = 50): 1 for a non-empty response of at most N words, N / words
//!   beyond that, 0 for an empty one. Rewards answering within a budget.
//! - `contains:word=W`: 1 if the response holds W as a whole word (any case), else 0.
//! - `arithmetic`: the query holds `a + b`, `a - b`, `a * b` (or `x`) with integers; 1 if the
//!   last number in the response is the result, else 0.
//! - `format:regex=R`: 1 if the regular expression R matches the response (anchor it with `^…$`
//!   to require the whole response), else 0. R runs to the end of the spec, commas included.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use regex::Regex;

use super::interface::{Reward, Scoring};

#[derive(Debug, Clone)]
pub enum Rule {
    Length { max_words: usize },
    Contains { word: String, pattern: Regex },
    Arithmetic,
    Format { regex: Regex },
}

impl Rule {
    /// Parses what follows `rule:`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let mut params = parse_params(name, params)?;
        let rule = match name {
            "length" => Rule::Length {
                max_words: match params.remove("max_words") {
                    Some(v) => v.parse().ok().filter(|&n: &usize| n > 0).with_context(|| {
                        format!("max_words must be a positive integer, got `{v}`")
                    })?,
                    None => 50,
                },
            },
            "contains" => {
                let word = params
                    .remove("word")
                    .context("rule contains needs word=W")?;
                let pattern = Regex::new(&format!(r"(?i)\b{}\b", regex::escape(&word)))?;
                Rule::Contains { word, pattern }
            }
            "arithmetic" => Rule::Arithmetic,
            "format" => {
                let source = params
                    .remove("regex")
                    .context("rule format needs regex=R")?;
                let regex = Regex::new(&source)
                    .with_context(|| format!("rule format: bad regex `{source}`"))?;
                Rule::Format { regex }
            }
            other => {
                bail!("unknown rule `{other}` (built in: length, contains, arithmetic, format)")
            }
        };
        if let Some(key) = params.keys().next() {
            bail!("rule {name} has no parameter `{key}`");
        }
        Ok(rule)
    }

    pub fn score_one(&self, query: &str, response: &str) -> Result<f64> {
        Ok(match self {
            Rule::Length { max_words } => {
                let words = response.split_whitespace().count();
                if words == 0 {
                    0.0
                } else if words <= *max_words {
                    1.0
                } else {
                    *max_words as f64 / words as f64
                }
            }
            Rule::Contains { pattern, .. } => indicator(pattern.is_match(response)),
            Rule::Arithmetic => {
                let expected = arithmetic_answer(query).with_context(|| {
                    format!(
                        "rule arithmetic: no `a + b`, `a - b` or `a * b` in the query {query:?}"
                    )
                })?;
                indicator(last_integer(response) == Some(expected))
            }
            Rule::Format { regex } => indicator(regex.is_match(response)),
        })
    }
}

impl Reward for Rule {
    fn describe(&self) -> String {
        match self {
            Rule::Length { max_words } => format!("rule:length:max_words={max_words}"),
            Rule::Contains { word, .. } => format!("rule:contains:word={word}"),
            Rule::Arithmetic => "rule:arithmetic".into(),
            Rule::Format { regex } => format!("rule:format:regex={}", regex.as_str()),
        }
    }

    fn score(&mut self, items: &[Scoring<'_>]) -> Result<Vec<f64>> {
        items
            .iter()
            .map(|it| self.score_one(it.query, it.response))
            .collect()
    }
}

fn indicator(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// `key=value` pairs separated by commas; a `regex` value runs to the end.
fn parse_params(rule: &str, text: &str) -> Result<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .with_context(|| format!("rule {rule}: expected key=value, got `{rest}`"))?;
        let (value, next) = if key == "regex" {
            (after, "")
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        params.insert(key.trim().to_string(), value.to_string());
        rest = next;
    }
    Ok(params)
}

fn arithmetic_answer(query: &str) -> Option<i64> {
    let re = Regex::new(r"(-?\d+)\s*([+\-*x×])\s*(-?\d+)").expect("valid regex");
    let caps = re.captures(query)?;
    let (a, b): (i64, i64) = (caps[1].parse().ok()?, caps[3].parse().ok()?);
    match &caps[2] {
        "+" => a.checked_add(b),
        "-" => a.checked_sub(b),
        _ => a.checked_mul(b),
    }
}

fn last_integer(text: &str) -> Option<i64> {
    let re = Regex::new(r"-?\d[\d,]*").expect("valid regex");
    re.find_iter(text)
        .last()
        .and_then(|m| m.as_str().replace(',', "").parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(spec: &str, query: &str, response: &str) -> f64 {
        Rule::parse(spec)
            .unwrap()
            .score_one(query, response)
            .unwrap()
    }

    #[test]
    fn length_budget() {
        assert_eq!(score("length:max_words=3", "q", "one two three"), 1.0);
        assert_eq!(
            score("length:max_words=3", "q", "one two three four five six"),
            0.5
        );
        assert_eq!(score("length", "q", "  "), 0.0);
    }

    #[test]
    fn contains_whole_word_any_case() {
        assert_eq!(score("contains:word=Paris", "q", "It is paris."), 1.0);
        assert_eq!(score("contains:word=Paris", "q", "Parisian food"), 0.0);
    }

    #[test]
    fn arithmetic_checks_the_last_number() {
        assert_eq!(score("arithmetic", "What is 12 * 3?", "12 * 3 = 36"), 1.0);
        assert_eq!(score("arithmetic", "What is 12 - 30?", "It is -18."), 1.0);
        assert_eq!(score("arithmetic", "What is 2 + 3?", "5, no, 6"), 0.0);
        assert!(
            Rule::parse("arithmetic")
                .unwrap()
                .score_one("Hello", "5")
                .is_err()
        );
    }

    #[test]
    fn format_regex_keeps_its_commas() {
        assert_eq!(score("format:regex=^\\d{1,3}$", "q", "123"), 1.0);
        assert_eq!(score("format:regex=^\\d{1,3}$", "q", "1234"), 0.0);
    }

    #[test]
    fn bad_specs_are_errors() {
        for spec in [
            "nope",
            "length:max_words=0",
            "length:words=3",
            "contains",
            "format:regex=(",
        ] {
            assert!(Rule::parse(spec).is_err(), "{spec}");
        }
    }
}
