//! Dynamic loss scaling for f16 training, as PyTorch's `GradScaler`: the objective is multiplied
//! by `scale` before the backward pass, so that gradients too small for f16 survive its matmuls,
//! and the gradients are divided by it before the update. A step whose scaled gradients
//! overflow (inf or NaN) is skipped and the scale halved; after `GROWTH_INTERVAL` updates
//! without one, the scale doubles, so it stays near the largest that fits.

use serde::{Deserialize, Serialize};

/// PyTorch's default: updates without an overflow before the scale doubles.
pub const GROWTH_INTERVAL: u32 = 2000;

/// PyTorch's default starting scale, 2^16.
pub const INITIAL_SCALE: f32 = 65536.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f32,
    /// Updates since the scale last changed.
    pub good_steps: u32,
}

impl LossScale {
    pub fn new(scale: f32) -> Self {
        Self {
            scale,
            good_steps: 0,
        }
    }

    /// After a step whose scaled gradients were `finite` (it made its update) or overflowed (it
    /// was skipped).
    pub fn record(&mut self, finite: bool) {
        match finite {
            true => self.after_update(),
            false => self.after_overflow(),
        }
    }

    fn after_update(&mut self) {
        self.good_steps += 1;
        if self.good_steps >= GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
    }

    fn after_overflow(&mut self) {
        self.scale /= 2.0;
        self.good_steps = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_the_growth_interval() {
        let mut s = LossScale::new(INITIAL_SCALE);
        s.record(false);
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.record(true);
        }
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        s.record(true);
        assert_eq!((s.scale, s.good_steps), (INITIAL_SCALE, 0));
        // An overflow restarts the count.
        for _ in 0..10 {
            s.record(true);
        }
        s.record(false);
        assert_eq!((s.scale, s.good_steps), (INITIAL_SCALE / 2.0, 0));
    }
}
