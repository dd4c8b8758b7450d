//! longlink's load generators (scenarios as a library; `longlink bench` calls them).

/// Placeholder until the first scenario lands.
pub fn scenarios() -> &'static [&'static str] {
    &[]
}
