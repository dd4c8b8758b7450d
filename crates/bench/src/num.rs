//! Number helpers the reports share (kept apart so latency, procfs and report need not import
//! one another).

/// `value` rounded to `decimals` decimals.
pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}
