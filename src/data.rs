//! Token sequences packed into batches for the model.
//!
//! A scored sequence is a query followed by a response (which ends in EOS). The model reads the
//! sequence without its last token and predicts the next one at every position; only predictions
//! of response tokens (EOS included) count, never query tokens or padding. Rows are right-padded
//! to the longest sequence of the batch, after any truncation.

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
