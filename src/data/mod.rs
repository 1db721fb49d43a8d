//! Ranked data: JSONL or Parquet files read, checked, tokenised, truncated and packed into
//! batches.
//!
//! A record (a JSONL line, a Parquet row) is a query with responses and their scores, in one of
//! the forms `parse` reads: ranked (RRHF's own), pairwise (chosen and rejected, scores 1 and 0),
//! a conversation, or TRL's conversational preference form. Every error names the file, the line
//! or row, and the field. JSONL lines are read one at a time, each at most `data.max_line_bytes`
//! long, so reading takes memory in proportion to the longest line allowed, whatever the file
//! holds.
//!
//! Scores are kept as the numbers they were read as (f64); what training uses of them is their
//! order within each query, decided on those numbers, so scores that differ only beyond f32's
//! precision still rank, and a score too large for f32 still counts as the largest.
//!
//! A scored sequence is a query followed by a response (which ends in EOS). The model reads the
//! sequence without its last token and predicts the next one at every position; only predictions
//! of response tokens (EOS included) count, never query tokens or padding. Sequences are truncated
//! first and then right-padded to the longest one of their batch.

mod files;
mod parse;

use std::path::Path;

use anyhow::{Context, Result, bail};

pub use files::{is_parquet, location};
pub use parse::Columns;

use crate::tokenizer::{Keep, Prompt, TemplateMode, Tokenizer};

/// The longest line a data file may have unless `data.max_line_bytes` says otherwise.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// How data files are read: the `[data]` keys that apply to every file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// The longest JSONL line accepted (`data.max_line_bytes`).
    pub max_line_bytes: usize,
    /// The file's names of the fields (`[data.columns]`).
    pub columns: Columns,
    /// Pairwise lines that share a prompt become one ranked query (`data.group_pairs`).
    pub group_pairs: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            columns: Columns::default(),
            group_pairs: false,
        }
    }
}

/// One query of a ranked file, with every response scored.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedExample {
    pub query: Prompt,
    pub responses: Vec<String>,
    pub scores: Vec<f64>,
    /// 1-based line (or Parquet row) in its file, for messages.
    pub line: usize,
}

/// Reads a ranked file: every record has responses and scores (or is pairwise).
pub fn read_ranked(path: &Path, opts: &ReadOptions) -> Result<Vec<RankedExample>> {
    let lines = read_query_lines(path, opts)?;
    lines
        .into_iter()
        .map(|q| {
            let at = location(path, q.line);
            let name = |f: &'static str| opts.columns.name(f).to_string();
            if q.responses.is_empty() {
                bail!(
                    "{at}: field `{}` is missing (or give `{}`, `{}`, `{}`)",
                    name("responses"),
                    name("prompt"),
                    name("chosen"),
                    name("rejected")
                );
            }
            let scores = q
                .scores
                .with_context(|| format!("{at}: field `{}` is missing", name("scores")))?;
            Ok(RankedExample {
                query: q.query,
                responses: q.responses,
                scores,
                line: q.line,
            })
        })
        .collect()
}

/// One record of a query file: a query, and whatever responses and scores it comes with.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLine {
    pub query: Prompt,
    pub responses: Vec<String>,
    pub scores: Option<Vec<f64>>,
    pub line: usize,
    /// Read from a pairwise record (chosen, rejected): what `data.group_pairs` groups.
    pub pairwise: bool,
}

impl QueryLine {
    /// The response to measure perplexity on: the best-scored one (the first on ties), the
    /// chosen one of a pair, or the only one.
    pub fn reference(&self) -> Option<&str> {
        match &self.scores {
            Some(scores) => self
                .responses
                .get(best_response(scores))
                .map(String::as_str),
            None if self.responses.len() == 1 => Some(&self.responses[0]),
            None => None,
        }
    }
}

/// The best response of a query: the highest score, the first on ties.
pub fn best_response(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// Each score's rank among its query's scores: how many distinct scores are below it. Equal
/// scores share a rank, and r_i < r_j exactly when score_i < score_j, so the ranking kernels,
/// which compare rewards in f32, see the order of the f64 scores as they were read.
pub fn score_ranks(scores: &[f64]) -> Vec<f32> {
    let mut distinct = scores.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    scores
        .iter()
        .map(|s| distinct.partition_point(|d| d < s) as f32)
        .collect()
}

/// Ranked data trains the ranking loss only through queries whose scores order some pair of
/// responses. None at all is an error (the loss would be the fine-tune term alone, silently);
/// some tied queries get one warning with their count.
pub fn check_rankable(examples: &[RankedExample], path: &Path) -> Result<()> {
    let tied = examples
        .iter()
        .filter(|e| e.scores.iter().all(|s| *s == e.scores[0]))
        .count();
    if tied == examples.len() {
        bail!(
            "{}: no query has two responses with different scores (all {tied} are ties or have \
             one response), so the ranking loss would be 0 at every step; score the responses, \
             or fine-tune on them instead",
            path.display()
        );
    }
    if tied > 0 {
        eprintln!(
            "warning: {}: {tied} of {} queries have only tied scores (or one response); they \
             add to the fine-tune loss but not to the ranking loss",
            path.display(),
            examples.len()
        );
    }
    Ok(())
}

/// Reads queries from JSONL or Parquet: `query` (or `prompt`, or `messages`), with optional
/// `responses` and `scores`, or `chosen` and `rejected`. Ranked, pairwise, conversational and
/// sampled files are all query files.
pub fn read_query_lines(path: &Path, opts: &ReadOptions) -> Result<Vec<QueryLine>> {
    let mut lines = Vec::new();
    files::for_each_record(path, "queries", opts.max_line_bytes, |record, number| {
        lines.push(parse::parse_query_record(&record, &opts.columns, number)?);
        Ok(())
    })?;
    Ok(match opts.group_pairs {
        true => group_pairs(lines),
        false => lines,
    })
}

/// Pairwise records that share a prompt, as one ranked query: its distinct responses in the order
/// they first appear, each scored by the pairs it wins, since RRHF ranks k responses at once.
/// The group keeps its first record's place and number; other records stay as they are.
pub fn group_pairs(lines: Vec<QueryLine>) -> Vec<QueryLine> {
    let mut out: Vec<QueryLine> = Vec::with_capacity(lines.len());
    let mut group_of: std::collections::HashMap<Prompt, usize> = Default::default();
    for line in lines {
        if !line.pairwise {
            out.push(line);
            continue;
        }
        let at = *group_of.entry(line.query.clone()).or_insert_with(|| {
            out.push(QueryLine {
                responses: vec![],
                scores: Some(vec![]),
                ..line.clone()
            });
            out.len() - 1
        });
        let group = &mut out[at];
        let scores = group.scores.as_mut().expect("a group has scores");
        for (response, win) in line.responses.into_iter().zip([1.0, 0.0]) {
            match group.responses.iter().position(|r| *r == response) {
                Some(j) => scores[j] += win,
                None => {
                    group.responses.push(response);
                    scores.push(win);
                }
            }
        }
    }
    out
}

/// How text becomes tokens.
#[derive(Debug, Clone, Copy)]
pub struct TokenizeOptions {
    /// Most tokens of query + response.
    pub max_length: usize,
    /// Queries longer than this keep their last tokens (left truncation); `None`: no limit
    /// beyond `max_length`.
    pub max_query_length: Option<usize>,
    pub template: TemplateMode,
}

/// A ranked example as tokens: the query with its special tokens, each response with EOS.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedExample {
    pub query: Vec<u32>,
    pub responses: Vec<Vec<u32>>,
    pub scores: Vec<f64>,
    /// The line of its file, for messages.
    pub line: usize,
}

/// Tokenises every example; `path` names the file in messages.
pub fn tokenize_examples(
    examples: &[RankedExample],
    tokenizer: &Tokenizer,
    opts: TokenizeOptions,
    path: &Path,
) -> Result<Vec<TokenizedExample>> {
    examples
        .iter()
        .map(|ex| tokenize_example(ex, tokenizer, opts).with_context(|| location(path, ex.line)))
        .collect()
}

/// Truncation: the query is left-truncated to `max_query_length` (its end, next to the
/// response, is what matters); a query that still leaves no room for a response under
/// `max_length` is an error. Each response keeps its first `max_length - |query|` tokens; its EOS
/// survives whenever the whole response fits.
pub fn tokenize_example(
    ex: &RankedExample,
    tokenizer: &Tokenizer,
    opts: TokenizeOptions,
) -> Result<TokenizedExample> {
    // Only as much of a long text is tokenised as the limits can keep (`encode_bounded`).
    let query = match opts.max_query_length {
        Some(limit) => {
            let mut ids =
                tokenizer.encode_query_bounded(&ex.query, opts.template, limit, Keep::Tail)?;
            ids.drain(..ids.len().saturating_sub(limit));
            ids
        }
        None => {
            tokenizer.encode_query_bounded(&ex.query, opts.template, opts.max_length, Keep::Head)?
        }
    };
    if query.len() >= opts.max_length {
        let count = match query.len() > opts.max_length {
            true => format!("more than {}", opts.max_length),
            false => query.len().to_string(),
        };
        bail!(
            "field `query`: {count} tokens leave no room for a response under max_length = {} \
             (raise data.max_length, or set data.max_query_length to keep the query's end)",
            opts.max_length
        );
    }
    let room = opts.max_length - query.len();
    let responses = ex
        .responses
        .iter()
        .map(|r| tokenizer.encode_response_truncated(r, room))
        .collect::<Result<_>>()?;
    Ok(TokenizedExample {
        query,
        responses,
        scores: ex.scores.clone(),
        line: ex.line,
    })
}

/// Several queries with their responses, as one batch of sequences plus the bookkeeping the
/// RRHF loss needs. Sequences are query-major: all responses of query 0, then of query 1, ...
#[derive(Debug, Clone)]
pub struct RankBatch {
    pub sequences: ScoredBatch,
    pub queries: usize,
    /// Response slots per query: the largest k in the batch; smaller queries are padded.
    pub slots: usize,
    /// `[queries * slots]`: the sequence row of each slot, `None` for padding.
    pub slot_rows: Vec<Option<usize>>,
    /// `[queries * slots]`: each response's rank among its query's scores ([`score_ranks`]; 0
    /// under padding): what the ranking loss compares.
    pub rewards: Vec<f32>,
    /// `[queries * slots]`: 1 for real responses, 0 for padding.
    pub valid: Vec<f32>,
    /// `[queries]`: the row of the best response (highest reward, first on ties).
    pub best_rows: Vec<usize>,
    /// `[rows]`: scored tokens per sequence (response and EOS).
    pub response_lens: Vec<f32>,
    /// `[queries]`: the longest sequence among the query's responses, the denominator of the
    /// original code's fine-tune loss (`padded_mean`).
    pub padded_lens: Vec<f32>,
}

impl RankBatch {
    pub fn new(examples: &[&TokenizedExample]) -> Self {
        let queries = examples.len();
        let slots = examples
            .iter()
            .map(|e| e.responses.len())
            .max()
            .unwrap_or(0);
        let mut pairs = Vec::new();
        let mut slot_rows = vec![None; queries * slots];
        let mut rewards = vec![0.0; queries * slots];
        let mut valid = vec![0.0; queries * slots];
        let mut best_rows = Vec::with_capacity(queries);
        let mut padded_lens = Vec::with_capacity(queries);
        for (q, ex) in examples.iter().enumerate() {
            let first_row = pairs.len();
            let ranks = score_ranks(&ex.scores);
            for (j, response) in ex.responses.iter().enumerate() {
                slot_rows[q * slots + j] = Some(pairs.len());
                rewards[q * slots + j] = ranks[j];
                valid[q * slots + j] = 1.0;
                pairs.push((ex.query.clone(), response.clone()));
            }
            best_rows.push(first_row + best_response(&ex.scores));
            let longest = ex.responses.iter().map(Vec::len).max().unwrap_or(0);
            padded_lens.push((ex.query.len() + longest - 1) as f32);
        }
        let response_lens = pairs.iter().map(|(_, r)| r.len() as f32).collect();
        Self {
            sequences: ScoredBatch::pack(&pairs),
            queries,
            slots,
            slot_rows,
            rewards,
            valid,
            best_rows,
            response_lens,
            padded_lens,
        }
    }

    /// Pairs (r_i < r_j) whose scores are ordered the same way (p_i < p_j), and all such pairs:
    /// the ranking accuracy of one batch is `matched / pairs`.
    pub fn ordered_pairs(&self, scores: &[f32]) -> (usize, usize) {
        let k = self.slots;
        let (mut matched, mut pairs) = (0, 0);
        for q in 0..self.queries {
            for i in 0..k {
                for j in 0..k {
                    let (a, b) = (q * k + i, q * k + j);
                    if self.valid[a] == 1.0
                        && self.valid[b] == 1.0
                        && self.rewards[a] < self.rewards[b]
                    {
                        pairs += 1;
                        matched += usize::from(scores[a] < scores[b]);
                    }
                }
            }
        }
        (matched, pairs)
    }

    /// Tokens the model reads (without padding), for throughput figures.
    pub fn real_tokens(&self) -> usize {
        self.sequences.key_valid.iter().filter(|&&v| v).count()
    }
}

/// Query/response pairs packed into one right-padded batch, row-major `[rows, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredBatch {
    pub rows: usize,
    pub width: usize,
    /// Model inputs: each sequence without its last token, padded with 0.
    pub tokens: Vec<i64>,
    /// The token each position predicts (0 under padding).
    pub targets: Vec<i64>,
    /// 1 where the target is a response token, 0 for query targets and padding.
    pub target_mask: Vec<f32>,
    /// Which input columns hold real tokens (the attention mask).
    pub key_valid: Vec<bool>,
}

impl ScoredBatch {
    pub fn pack(pairs: &[(Vec<u32>, Vec<u32>)]) -> Self {
        assert!(
            pairs.iter().all(|(q, r)| !q.is_empty() && !r.is_empty()),
            "queries and responses need tokens"
        );
        let rows = pairs.len();
        let width = pairs
            .iter()
            .map(|(q, r)| q.len() + r.len() - 1)
            .max()
            .unwrap_or(0);
        let mut b = Self {
            rows,
            width,
            tokens: vec![0; rows * width],
            targets: vec![0; rows * width],
            target_mask: vec![0.0; rows * width],
            key_valid: vec![false; rows * width],
        };
        for (row, (q, r)) in pairs.iter().enumerate() {
            let seq: Vec<u32> = q.iter().chain(r).copied().collect();
            for j in 0..seq.len() - 1 {
                let at = row * width + j;
                b.tokens[at] = seq[j] as i64;
                b.targets[at] = seq[j + 1] as i64;
                b.key_valid[at] = true;
                // Position j predicts token j + 1: a response token when j + 1 >= |query|.
                if j + 1 >= q.len() {
                    b.target_mask[at] = 1.0;
                }
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(query: Vec<u32>, responses: Vec<Vec<u32>>, scores: Vec<f64>) -> TokenizedExample {
        TokenizedExample {
            query,
            responses,
            scores,
            line: 1,
        }
    }

    #[test]
    fn batch_of_queries_with_different_k() {
        let a = example(vec![1, 2], vec![vec![5, 9], vec![6, 7, 9]], vec![0.5, 2.0]);
        let b = example(
            vec![3],
            vec![vec![8, 9], vec![9], vec![7, 9]],
            vec![1.0, 1.0, 0.0],
        );
        let batch = RankBatch::new(&[&a, &b]);
        assert_eq!(
            (batch.queries, batch.slots, batch.sequences.rows),
            (2, 3, 5)
        );
        assert_eq!(
            batch.slot_rows,
            vec![Some(0), Some(1), None, Some(2), Some(3), Some(4)]
        );
        assert_eq!(batch.valid, vec![1., 1., 0., 1., 1., 1.]);
        // Ranks within each query: 0.5 < 2.0; 1.0 = 1.0 > 0.0.
        assert_eq!(batch.rewards, vec![0., 1., 0., 1., 1., 0.]);
        // Best: the higher score; on a tie the first.
        assert_eq!(batch.best_rows, vec![1, 2]);
        assert_eq!(batch.response_lens, vec![2., 3., 2., 1., 2.]);
        assert_eq!(batch.padded_lens, vec![4., 2.]);
    }

    #[test]
    fn pairs_sharing_a_prompt_become_one_ranked_query() {
        let pair = |line, q: &str, chosen: &str, rejected: &str| QueryLine {
            query: Prompt::Text(q.into()),
            responses: vec![chosen.into(), rejected.into()],
            scores: Some(vec![1.0, 0.0]),
            line,
            pairwise: true,
        };
        let ranked = QueryLine {
            pairwise: false,
            ..pair(2, "p", "x", "y")
        };
        let grouped = group_pairs(vec![
            pair(1, "p", "a", "b"),
            ranked.clone(),
            pair(3, "q", "a", "b"),
            pair(4, "p", "c", "a"),
            pair(5, "p", "a", "d"),
        ]);
        assert_eq!(grouped.len(), 3);
        // "a" wins twice (over b, d) and loses once (to c); b and d win nothing, c once.
        assert_eq!(grouped[0].responses, vec!["a", "b", "c", "d"]);
        assert_eq!(grouped[0].scores, Some(vec![2.0, 0.0, 1.0, 0.0]));
        assert_eq!(grouped[0].line, 1);
        assert_eq!(grouped[1], ranked);
        assert_eq!(grouped[2].scores, Some(vec![1.0, 0.0]));
        assert_eq!(grouped[2].line, 3);
    }

    #[test]
    fn query_unscored_response_and_eos_scored() {
        // query [1, 2], response [7, 8, EOS=9]; second row shorter.
        let b = ScoredBatch::pack(&[(vec![1, 2], vec![7, 8, 9]), (vec![1], vec![9])]);
        assert_eq!((b.rows, b.width), (2, 4));
        assert_eq!(b.tokens, vec![1, 2, 7, 8, 1, 0, 0, 0]);
        assert_eq!(b.targets, vec![2, 7, 8, 9, 9, 0, 0, 0]);
        assert_eq!(b.target_mask, vec![0., 1., 1., 1., 1., 0., 0., 0.]);
        assert_eq!(
            b.key_valid,
            vec![true, true, true, true, true, false, false, false]
        );
    }
}
