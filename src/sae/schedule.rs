//! Learning-rate schedule: linear warm-up from 0, then constant, linear or cosine decay.

use crate::spec::Schedule;

pub fn lr_at(step: u64, total: u64, warmup: u64, peak: f64, schedule: Schedule) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak * (1.0 - progress),
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        assert!((lr_at(0, 100, 10, 1.0, Schedule::Constant) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0, Schedule::Constant) - 1.0).abs() < 1e-12);
        assert!((lr_at(50, 100, 10, 1.0, Schedule::Constant) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0, Schedule::Linear) - 0.5).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0, Schedule::Cosine) - 0.5).abs() < 1e-12);
        assert!(lr_at(99, 100, 10, 1.0, Schedule::Cosine) < 0.01);
    }
}
