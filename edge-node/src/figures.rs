//! Figures, as every Cascade command that measures prints them: one JSON object per line
//! (`{"figure": "...", "value": ..., "unit": "..."}`) with `--json`, a readable table
//! otherwise. Names are stable, dotted and lowercase. Progress goes to stderr so stdout
//! stays machine-readable.

use serde::Serialize;

/// One named measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable dotted lowercase name, e.g. `model.edge_int8.test_accuracy`.
    pub figure: String,
    /// The value.
    pub value: f64,
    /// Unit: `us`, `bytes`, `fraction`, `ratio`, `flops`, `items_per_s`, ...
    pub unit: &'static str,
}

/// Collects figures and prints them in one of the two formats.
#[derive(Debug, Default)]
pub struct Figures {
    figures: Vec<Figure>,
}

impl Figures {
    /// Records a figure.
    pub fn push(&mut self, figure: impl Into<String>, value: f64, unit: &'static str) {
        self.figures.push(Figure { figure: figure.into(), value, unit });
    }

    /// The figure named `name`, if recorded.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.iter().find(|f| f.figure == name).map(|f| f.value)
    }

    /// Every figure as one JSON object per line.
    pub fn to_json_lines(&self) -> String {
        self.figures.iter().map(|f| serde_json::to_string(f).unwrap_or_default() + "\n").collect()
    }

    /// Prints every figure to stdout.
    pub fn print(&self, json: bool) {
        if json {
            print!("{}", self.to_json_lines());
            return;
        }
        let width = self.figures.iter().map(|f| f.figure.len()).max().unwrap_or(0);
        for f in &self.figures {
            let value = if f.value.fract() == 0.0 && f.value.abs() < 1e15 {
                format!("{}", f.value as i64)
            } else if f.value.abs() >= 100.0 {
                format!("{:.1}", f.value)
            } else {
                format!("{:.4}", f.value)
            };
            println!("{:width$}  {value:>14} {}", f.figure, f.unit);
        }
    }
}

/// Median of a sample (sorts it in place); 0 for an empty sample.
pub fn median(samples: &mut [f64]) -> f64 {
    percentile(samples, 0.5)
}

/// The `q` quantile (0..=1, nearest rank) of a sample (sorts it in place).
pub fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&mut v), 3.0);
        assert_eq!(percentile(&mut v, 0.99), 5.0);
        assert_eq!(percentile(&mut v, 0.0), 1.0);
        assert_eq!(median(&mut []), 0.0);
    }
}
