//! Masking secrets in step output before it is stored, streamed or printed: every secret
//! value, each line of a multi-line value, and their base64 forms become `***`.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};

/// Shorter values are not masked: hiding every `1` or `on` in a log would hide nothing.
const MIN_LEN: usize = 4;

/// Replaces known secret strings. Cheap to apply when there are none.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut needles: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            let s = s.trim_end_matches(['\r', '\n']);
            if s.len() >= MIN_LEN && !needles.iter().any(|n| n == s) {
                needles.push(s.to_string());
            }
        };
        for secret in secrets {
            add(secret);
            for line in secret.lines() {
                add(line.trim());
            }
            // `echo -n "$S" | base64`, `echo "$S" | base64`, and URL-safe encoders; long
            // encodings are wrapped at 76 columns by base64(1), so each full piece counts too.
            for encoded in [
                STANDARD.encode(secret),
                STANDARD.encode(format!("{secret}\n")),
                URL_SAFE_NO_PAD.encode(secret),
            ] {
                add(encoded.trim_end_matches('='));
                add(&encoded);
                let bytes = encoded.as_bytes();
                if bytes.len() > 76 {
                    for chunk in bytes.chunks(76).filter(|c| c.len() >= 16) {
                        add(std::str::from_utf8(chunk).unwrap_or_default());
                    }
                }
            }
        }
        if needles.is_empty() {
            return Masker::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .ok();
        Masker { matcher }
    }

    /// The line with every secret replaced by `***`.
    pub fn mask<'a>(&self, line: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match &self.matcher {
            Some(m) if m.is_match(line) => std::borrow::Cow::Owned(
                m.replace_all_bytes(line, &vec![&b"***"[..]; m.patterns_len()]),
            ),
            _ => std::borrow::Cow::Borrowed(line),
        }
    }

    pub fn mask_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.mask(text.as_bytes())).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lines_and_base64_forms() {
        let m = Masker::new([
            "hunter2-secret",
            "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----",
            "ab",
        ]);
        assert_eq!(m.mask_str("pw=hunter2-secret!"), "pw=***!");
        assert_eq!(m.mask_str("AAAABBBBCCCC"), "***");
        assert_eq!(m.mask_str(&STANDARD.encode("hunter2-secret")), "***");
        assert_eq!(m.mask_str(&STANDARD.encode("hunter2-secret\n")), "***");
        assert_eq!(m.mask_str("about ab"), "about ab", "too short to mask");
        assert_eq!(Masker::new([]).mask_str("anything"), "anything");
        let long = "x".repeat(200);
        let wrapped = STANDARD.encode(&long);
        let m = Masker::new([long.as_str()]);
        for piece in wrapped.as_bytes().chunks(76) {
            assert!(!m.mask(piece).windows(8).any(|w| w == &piece[..8]) || piece.len() < 16);
        }
    }
}
