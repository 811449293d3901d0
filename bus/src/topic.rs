//! AMQP topic matching: a binding pattern of dot-separated words where `*` matches exactly one
//! word and `#` matches zero or more.

/// True when `key` matches the topic `pattern`.
pub fn matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    match_words(&p, &k)
}

fn match_words(p: &[&str], k: &[&str]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((&"#", rest)) => (0..=k.len()).any(|skip| match_words(rest, &k[skip..])),
        Some((&w, rest)) => match k.split_first() {
            Some((&kw, krest)) if w == "*" || w == kw => match_words(rest, krest),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn amqp_topic_rules() {
        assert!(matches("job.#", "job.a.running"));
        assert!(matches("job.#", "job"));
        assert!(matches("job.*.running", "job.a.running"));
        assert!(!matches("job.*.running", "job.a.b.running"));
        assert!(matches("#.finished", "job.x.finished"));
        assert!(matches("#", ""));
        assert!(!matches("job.*", "job"));
        assert!(matches("a.#.z", "a.z"));
        assert!(matches("a.#.z", "a.b.c.z"));
        assert!(!matches("a.#.z", "a.b.c"));
        assert!(matches("exact.key", "exact.key"));
        assert!(!matches("exact.key", "exact.keys"));
    }
}
