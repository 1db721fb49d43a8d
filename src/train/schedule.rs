//! The learning rate at each optimizer step: linear warmup from 0, then cosine or linear decay
//! to 0 (the schedules of Hugging Face's `get_*_schedule_with_warmup`, step for step).

use super::config::Schedule;

#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
    pub kind: Schedule,
}

impl LrSchedule {
    /// The rate of the update made after `step` earlier updates.
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let progress = (step - self.warmup) as f64 / (self.total - self.warmup).max(1) as f64;
        let factor = match self.kind {
            Schedule::Constant => 1.0,
            Schedule::Linear => (1.0 - progress).max(0.0),
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        self.peak * factor.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            peak: 1.0,
            warmup: 2,
            total: 10,
            kind: Schedule::Cosine,
        };
        assert_eq!(s.at(0), 0.0);
        assert_eq!(s.at(1), 0.5);
        assert_eq!(s.at(2), 1.0);
        assert!((s.at(6) - 0.5).abs() < 1e-12);
        assert!(s.at(10).abs() < 1e-12);
        let l = LrSchedule {
            kind: Schedule::Linear,
            ..s
        };
        assert!((l.at(6) - 0.5).abs() < 1e-12);
    }
}
