//! What a value becomes on a network: trimmed and cut to the connector's
//! limits. Echo suppression compares reports with these forms, because the
//! monitor reads back what the network stores, not what was sent.

use crate::host::Description;

/// The stored form of an avatar in `last_applied`: the digest of the bytes
/// the network received.
pub fn avatar_key(sha256_hex: &str) -> String {
    format!("sha256:{sha256_hex}")
}

/// `value` trimmed and cut to `max_chars` characters; true when cut.
pub fn text(value: &str, max_chars: Option<u32>) -> (String, bool) {
    let trimmed = value.trim();
    match max_chars {
        Some(max) if trimmed.chars().count() > max as usize => {
            let cut: String = trimmed.chars().take(max as usize).collect();
            (cut.trim_end().to_owned(), true)
        }
        _ => (trimmed.to_owned(), false),
    }
}

/// `value` without control characters (a line break becomes a space) and
/// without bidirectional overrides and isolates, which could make a status
/// read differently from what it says on other users' screens.
pub fn clean(value: &str) -> String {
    value
        .chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() || crate::text::is_direction_control(c) => None,
            c => Some(c),
        })
        .collect()
}

/// A signature as the network described by `description` stores it.
pub fn signature(value: &str, description: Option<&Description>) -> (String, bool) {
    text(
        value,
        description.and_then(|d| d.limits.max_signature_chars),
    )
}

/// A mood as the network described by `description` stores it: cut to its
/// `max_mood_chars`, and where it has a closed vocabulary (`moods`), in the
/// vocabulary's own spelling when the word is there (case ignored).
pub fn mood(value: &str, description: Option<&Description>) -> (String, bool) {
    let (value, cut) = text(value, description.and_then(|d| d.limits.max_mood_chars));
    let known = description
        .into_iter()
        .flat_map(|d| d.moods.iter())
        .find(|m| m.trim().eq_ignore_ascii_case(&value));
    match known {
        Some(word) => (word.trim().to_owned(), cut),
        None => (value, cut),
    }
}

/// Whether the network takes `mood` (its [`mood`] form): any text when it
/// lists no moods, else only a word of its vocabulary; `Err` says why not.
pub fn known_mood(mood: &str, description: &Description) -> Result<(), String> {
    if description.moods.is_empty() || description.moods.iter().any(|m| m.trim() == mood) {
        return Ok(());
    }
    Err(format!(
        "mood {mood:?} not applied: this network knows only {}",
        description.moods.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_cut_by_characters_not_bytes() {
        assert_eq!(text("  hi  ", None), ("hi".to_owned(), false));
        assert_eq!(text("héllo wörld", Some(5)), ("héllo".to_owned(), true));
        assert_eq!(text("ab cd", Some(3)), ("ab".to_owned(), true));
        assert_eq!(text("日本語", Some(3)), ("日本語".to_owned(), false));
    }

    #[test]
    fn a_closed_vocabulary_takes_its_own_words_only() {
        let description = Description {
            fields: Vec::new(),
            limits: crate::host::Limits {
                max_signature_chars: None,
                max_mood_chars: Some(10),
                avatar: None,
            },
            moods: vec!["Happy".into(), "Away".into()],
            credentials: None,
            config: None,
        };
        assert_eq!(
            mood(" happy ", Some(&description)),
            ("Happy".to_owned(), false)
        );
        assert_eq!(known_mood("Happy", &description), Ok(()));
        let refused = known_mood("grumpy", &description).unwrap_err();
        assert_eq!(
            refused,
            "mood \"grumpy\" not applied: this network knows only Happy, Away"
        );
        // Cut to max_mood_chars like a signature.
        assert_eq!(
            mood("a very long mood", Some(&description)),
            ("a very lon".to_owned(), true)
        );
        // No vocabulary: any text.
        let free = Description {
            moods: Vec::new(),
            ..description
        };
        assert_eq!(known_mood("grumpy", &free), Ok(()));
    }

    #[test]
    fn controls_and_direction_overrides_are_removed() {
        assert_eq!(clean("paid\u{202E}gnp.exe"), "paidgnp.exe");
        assert_eq!(clean("a\u{0007}b\u{2066}c\u{2069}"), "abc");
        assert_eq!(clean("two\nlines\tand tab"), "two lines and tab");
        assert_eq!(clean("emoji 🎉 and ünïcödé"), "emoji 🎉 and ünïcödé");
    }
}
