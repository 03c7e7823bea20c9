//! "Did you mean" suggestions (strsim).

/// The candidate closest to `input`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

/// Formats `Some(x)` as ` (did you mean `x`?)`, `None` as nothing.
pub fn hint(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_close_only() {
        let c = ["virtio-blk-device", "isa-serial"];
        assert_eq!(
            super::did_you_mean("virtio-blk-devic", c).as_deref(),
            Some("virtio-blk-device")
        );
        assert_eq!(super::did_you_mean("zzz", c), None);
    }
}
