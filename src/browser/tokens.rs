//! Tokens as HTML: whitespace and control characters made visible, everything escaped, and
//! background shades for activations and signed effects.

/// Visible, escaped text of one token: newline ⏎, tab ⇥, carriage return ␍, other control
/// characters as their Unicode control pictures, a token of spaces only as middle dots;
/// `<`, `>`, `&`, `"` and `'` escaped. Invalid UTF-8 pieces of byte-level BPE arrive as
/// U+FFFD and stay so.
pub fn token_html(token: &str) -> String {
    let only_spaces = !token.is_empty() && token.chars().all(|c| c == ' ');
    let mut out = String::with_capacity(token.len() + 8);
    for c in token.chars() {
        match c {
            ' ' if only_spaces => out.push('·'),
            '\n' => out.push('⏎'),
            '\t' => out.push('⇥'),
            '\r' => out.push('␍'),
            c if (c as u32) < 0x20 => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('�')),
            '\u{7f}' => out.push('␡'),
            c => push_escaped(&mut out, c),
        }
    }
    if token.is_empty() {
        out.push('∅');
    }
    out
}

/// Escape arbitrary text for HTML content or attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    s.chars().for_each(|c| push_escaped(&mut out, c));
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '&' => out.push_str("&amp;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// Orange with opacity ∝ activation / max (0 → none).
pub fn activation_shade(value: f32, max: f32) -> String {
    let a = if max > 0.0 {
        (value / max).clamp(0.0, 1.0)
    } else {
        0.0
    };
    if a <= 0.0 {
        return String::new();
    }
    format!("background:rgba(255,140,0,{:.3})", 0.08 + 0.82 * a)
}

/// Red for negative, blue for positive, opacity ∝ |value| / scale.
pub fn signed_shade(value: f32, scale: f32) -> String {
    let a = if scale > 0.0 {
        (value.abs() / scale).clamp(0.0, 1.0)
    } else {
        0.0
    };
    if a <= 0.0 {
        return String::new();
    }
    let rgb = if value < 0.0 {
        "220,40,40"
    } else {
        "40,90,220"
    };
    format!("background:rgba({rgb},{:.3})", 0.08 + 0.77 * a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbitrary_token_text_is_escaped_and_whitespace_visible() {
        assert_eq!(
            token_html("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
        assert_eq!(token_html("a&b\"c"), "a&amp;b&quot;c");
        assert_eq!(token_html("\n"), "⏎");
        assert_eq!(token_html("\n\n"), "⏎⏎");
        assert_eq!(token_html("   "), "···");
        assert_eq!(token_html(" the"), " the");
        assert_eq!(token_html("\t\r\u{0}\u{1b}\u{7f}"), "⇥␍␀␛␡");
        assert_eq!(token_html("\u{fffd}"), "\u{fffd}");
        assert_eq!(token_html(""), "∅");
        assert!(!token_html("<img src=x onerror=alert(1)>").contains('<'));
    }
}
