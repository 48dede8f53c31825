//! Text hygiene shared by what users see and what operators read: which
//! characters could make a text read differently from what it says, and
//! plugin log messages made into one safe line.

/// Longest plugin log message kept, in characters.
pub const MAX_LOG_CHARS: usize = 2000;

/// Bidirectional overrides, embeddings, isolates and marks: they reorder
/// how the text around them is displayed.
pub fn is_direction_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}'
    )
}

/// A plugin's log message as one safe line: control characters (line
/// breaks that would forge further log lines, terminal escapes) and
/// direction controls written as `\u{..}` escapes, a backslash doubled (so
/// an escape in the output is always one the gateway wrote), and the text
/// cut to [`MAX_LOG_CHARS`] characters.
pub fn log_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_LOG_CHARS));
    for c in message.chars().take(MAX_LOG_CHARS) {
        match c {
            '\\' => line.push_str("\\\\"),
            c if c.is_control() || is_direction_control(c) => {
                line.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => line.push(c),
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_cannot_forge_log_lines_or_escapes() {
        let forged = "done\n2026-12-02T10:00:00Z  INFO gateway: admin token accepted";
        let line = log_line(forged);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("done\\u{a}2026"), "{line}");
        assert_eq!(log_line("\u{1b}[2Jcleared"), "\\u{1b}[2Jcleared");
        assert_eq!(log_line("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        // A backslash from the plugin cannot pass for an escape.
        assert_eq!(log_line("\\u{a}"), "\\\\u{a}");
        assert_eq!(log_line("ünïcödé 🎉"), "ünïcödé 🎉");
        assert_eq!(log_line(&"x".repeat(5000)).len(), MAX_LOG_CHARS);
    }
}
