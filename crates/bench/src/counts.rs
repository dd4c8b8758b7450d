//! A worker's summed counters as one `tag name=value …` line: the codec the offline and
//! reconnect scenarios share (each keeps its own fields and which of them are maxima).

/// A struct of `u64` counters that a worker writes as `TAG name=value …` and the parent
/// reads back and sums over workers.
pub(crate) trait CountLine: Default + Copy {
    /// The line's first word.
    const TAG: &'static str;
    /// Fields that take the larger of two values when summed (times), not the sum.
    const MAXIMA: &'static [&'static str];

    /// The fields in line order, with how to read and write each.
    fn fields(&mut self) -> Vec<(&'static str, &mut u64)>;

    /// `TAG name=value …`.
    fn to_line(mut self) -> String {
        let pairs: Vec<String> = self
            .fields()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!("{} {}", Self::TAG, pairs.join(" "))
    }

    /// The counts of a line's words (after the tag); unknown names are ignored, a bad value
    /// refuses the line.
    fn from_words(words: &str) -> Option<Self> {
        let mut counts = Self::default();
        let mut fields = counts.fields();
        for word in words.split_whitespace() {
            let (name, value) = word.split_once('=')?;
            let value: u64 = value.parse().ok()?;
            if let Some((_, slot)) = fields.iter_mut().find(|(n, _)| *n == name) {
                **slot = value;
            }
        }
        Some(counts)
    }

    /// Sums `other` in, except the [`Self::MAXIMA`], which take the larger.
    fn add(&mut self, other: &Self) {
        let mut other = *other;
        let theirs: Vec<u64> = other.fields().iter().map(|(_, v)| **v).collect();
        for ((name, mine), theirs) in self.fields().iter_mut().zip(theirs) {
            if Self::MAXIMA.contains(name) {
                **mine = (**mine).max(theirs);
            } else {
                **mine += theirs;
            }
        }
    }
}
