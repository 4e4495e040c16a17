//! Masking secrets in step output and in every text that leaves a step, before it is
//! stored, streamed, printed or sent to Gitea: every secret value, each line of a
//! multi-line value, their hex, URL-encoded, JSON-escaped, backslash-doubled and base64
//! forms (base64 at each of the three byte offsets of a longer stream), and each segment
//! of a JWT become `***`. Lines that reach the masker in pieces are masked across the cuts
//! ([`Masker::mask_piece`]).
use std::{borrow::Cow, collections::HashSet, fmt};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
};

/// Shorter values are not masked: hiding every `1` or `on` in a log would hide nothing.
/// The same bound holds for each derived form, and forms are only derived from values
/// that are long enough themselves (the base64 of `ab` is not masked either).
const MIN_LEN: usize = 4;

/// What replaces a secret.
const MASK: &[u8] = b"***";

/// base64(1) wraps its output at this many columns.
const BASE64_WRAP: usize = 76;

/// Replaces known secret strings. Cheap to apply when there are none.
#[derive(Clone, Default)]
pub struct Masker {
    needles: Vec<String>,
    matcher: Option<AhoCorasick>,
    /// Length of the longest needle: a cut line keeps one byte less than this back.
    longest: usize,
}

/// Never prints a secret.
impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("needles", &self.needles.len())
            .finish()
    }
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut needles = Needles::default();
        for secret in secrets {
            needles.secret(secret);
        }
        Masker::build(needles.list)
    }

    /// Masks what either masks.
    pub fn union(&self, other: &Masker) -> Masker {
        let mut needles = Needles::default();
        for n in self.needles.iter().chain(&other.needles) {
            needles.add(n);
        }
        Masker::build(needles.list)
    }

    fn build(needles: Vec<String>) -> Masker {
        if needles.is_empty() {
            return Masker::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .ok();
        let longest = needles.iter().map(String::len).max().unwrap_or(0);
        Masker {
            needles,
            matcher,
            longest,
        }
    }

    /// The line with every secret replaced by `***`.
    pub fn mask<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.matcher {
            Some(m) if m.is_match(line) => {
                Cow::Owned(m.replace_all_bytes(line, &vec![MASK; m.patterns_len()]))
            }
            _ => Cow::Borrowed(line),
        }
    }

    pub fn mask_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.mask(text.as_bytes())).into_owned()
    }

    /// Masks a piece of a line that goes on in later pieces. `carry` holds what is not
    /// decided yet (at most the longest needle less one byte: where a secret that may
    /// straddle the cut could start): it is put before `piece`, and what comes back is
    /// final. Every byte comes out exactly once and in order; the pieces that come back,
    /// followed by [`mask_end`](Masker::mask_end), are the whole line masked at once.
    pub fn mask_piece(&self, carry: &mut Vec<u8>, piece: &[u8]) -> Vec<u8> {
        carry.extend_from_slice(piece);
        let Some(m) = &self.matcher else {
            return std::mem::take(carry);
        };
        // A match that starts before `safe` lies wholly in `carry`, so it is the match the
        // whole line would give; one that starts later may still grow.
        let safe = carry.len().saturating_sub(self.longest.saturating_sub(1));
        let mut out = Vec::with_capacity(safe);
        let mut done = 0;
        for found in m.find_iter(carry.as_slice()) {
            if found.start() >= safe {
                break;
            }
            out.extend_from_slice(&carry[done..found.start()]);
            out.extend_from_slice(MASK);
            done = found.end();
        }
        let cut = done.max(safe);
        out.extend_from_slice(&carry[done..cut]);
        carry.drain(..cut);
        out
    }

    /// Masks the last piece of a line, after what `carry` kept back, and empties `carry`.
    pub fn mask_end(&self, carry: &mut Vec<u8>, last: &[u8]) -> Vec<u8> {
        carry.extend_from_slice(last);
        let out = self.mask(carry).into_owned();
        carry.clear();
        out
    }
}

/// The strings to mask, each once, in the order found.
#[derive(Default)]
struct Needles {
    list: Vec<String>,
    seen: HashSet<String>,
}

impl Needles {
    fn add(&mut self, needle: &str) {
        if needle.len() >= MIN_LEN && !self.seen.contains(needle) {
            self.seen.insert(needle.to_string());
            self.list.push(needle.to_string());
        }
    }

    /// A secret value: itself and its forms, each of its lines and their forms, and the
    /// segments of a JWT.
    fn secret(&mut self, secret: &str) {
        let value = secret.trim_end_matches(['\r', '\n']);
        if value.len() < MIN_LEN {
            return;
        }
        self.value(value);
        for line in value.lines() {
            self.value(line.trim());
        }
        if let Some(segments) = jwt_segments(value) {
            for segment in segments {
                self.value(segment);
            }
        }
    }

    /// One string and its encoded forms.
    fn value(&mut self, value: &str) {
        if value.len() < MIN_LEN {
            return;
        }
        self.add(value);
        self.add(&hex::encode(value));
        self.add(&hex::encode_upper(value));
        for form in url_forms(value.as_bytes()) {
            self.add(&form);
        }
        for form in json_forms(value) {
            self.add(&form);
        }
        // Backslashes doubled: SQL `E''` literals (psql's `:'var'`), most languages' repr.
        self.add(&value.replace('\\', "\\\\"));
        self.base64_whole(value);
        // `echo "$S" | base64`: the newline is encoded too.
        self.base64_whole(&format!("{value}\n"));
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            for offset in 0..3 {
                self.add(&base64_inner(&engine, value.as_bytes(), offset));
            }
        }
    }

    /// `value` encoded alone, with and without padding, and the lines of base64(1)'s
    /// wrapped output.
    fn base64_whole(&mut self, value: &str) {
        for engine in [STANDARD, URL_SAFE] {
            let encoded = engine.encode(value);
            self.add(&encoded);
            self.add(encoded.trim_end_matches('='));
            if encoded.len() > BASE64_WRAP {
                for chunk in encoded.as_bytes().chunks(BASE64_WRAP) {
                    if chunk.len() >= 16 {
                        self.add(std::str::from_utf8(chunk).unwrap_or_default());
                    }
                }
            }
        }
    }
}

/// The characters of the base64 of a stream in which `bytes` start `offset` bytes (0, 1
/// or 2) after a 3-byte boundary that depend on `bytes` alone: what every encoding of
/// `…x` + `bytes` + `y…` with that alignment contains, whatever comes before and after.
fn base64_inner(engine: &impl base64::Engine, bytes: &[u8], offset: usize) -> String {
    let mut stream = vec![0u8; offset];
    stream.extend_from_slice(bytes);
    // Two more bytes, so that the last characters of `bytes` are not padding.
    stream.extend_from_slice(&[0, 0]);
    let encoded = engine.encode(&stream);
    // Character `i` is made of bits `6i..6i+6` of the stream; `bytes` are bits
    // `8*offset..8*(offset+len)`.
    let first = (8 * offset).div_ceil(6);
    let end = 8 * (offset + bytes.len()) / 6;
    encoded[first..end].to_string()
}

/// Percent-encodings as common encoders write them: every byte but the unreserved ones
/// (`encodeURIComponent` also keeps `!'()*`, Python's `quote` keeps `/`, HTML forms keep
/// `*` and escape `~`), with upper- or lower-case hex digits, and `+` or `%20` for space.
fn url_forms(bytes: &[u8]) -> Vec<String> {
    const KEPT: [&[u8]; 4] = [b"-._~", b"-._~/", b"-._~!'()*", b"-._*"];
    let mut forms = Vec::new();
    for kept in KEPT {
        for upper in [true, false] {
            for plus in [false, true] {
                let mut out = String::with_capacity(bytes.len() * 3);
                for &b in bytes {
                    if b.is_ascii_alphanumeric() || kept.contains(&b) {
                        out.push(b as char);
                    } else if b == b' ' && plus {
                        out.push('+');
                    } else if upper {
                        out.push_str(&format!("%{b:02X}"));
                    } else {
                        out.push_str(&format!("%{b:02x}"));
                    }
                }
                forms.push(out);
            }
        }
    }
    forms
}

/// The JSON string forms of `value` without the quotes: as serde_json writes it, with
/// every non-ASCII character as `\uXXXX` (Python's default, lower- or upper-case), with
/// `/` as `\/` (PHP), and with `<`, `>`, `&` as `\u003c`… (Go).
fn json_forms(value: &str) -> Vec<String> {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let plain = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default()
        .to_string();
    let ascii = |upper: bool| {
        let mut out = String::with_capacity(plain.len());
        for c in plain.chars() {
            if c.is_ascii() {
                out.push(c);
                continue;
            }
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                if upper {
                    out.push_str(&format!("\\u{unit:04X}"));
                } else {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        out
    };
    let go = plain
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    vec![
        ascii(false),
        ascii(true),
        plain.replace('/', "\\/"),
        go,
        plain,
    ]
}

/// The three base64url segments of a JWT (header and payload are JSON objects, so both
/// begin with `eyJ`).
fn jwt_segments(value: &str) -> Option<[&str; 3]> {
    let mut parts = value.split('.');
    let segments = [parts.next()?, parts.next()?, parts.next()?];
    let base64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (parts.next().is_none()
        && segments[0].starts_with("eyJ")
        && segments[1].starts_with("eyJ")
        && segments.iter().all(|s| base64url(s)))
    .then_some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` masked, as a string.
    fn masked(m: &Masker, text: &str) -> String {
        m.mask_str(text)
    }

    #[test]
    fn values_lines_and_whole_base64() {
        let m = Masker::new([
            "hunter2-secret",
            "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----",
            "ab",
        ]);
        assert_eq!(masked(&m, "pw=hunter2-secret!"), "pw=***!");
        assert_eq!(masked(&m, "AAAABBBBCCCC"), "***");
        assert_eq!(masked(&m, &STANDARD.encode("hunter2-secret")), "***");
        assert_eq!(masked(&m, &STANDARD.encode("hunter2-secret\n")), "***");
        assert_eq!(masked(&m, &URL_SAFE.encode("hunter2-secret")), "***");
        assert_eq!(masked(&m, "about ab"), "about ab", "too short to mask");
        assert_eq!(
            masked(&m, &STANDARD.encode("ab")),
            STANDARD.encode("ab"),
            "no form of a short value is masked"
        );
        assert_eq!(Masker::new([]).mask_str("anything"), "anything");
    }

    #[test]
    fn wrapped_base64_lines() {
        let long = "x".repeat(200);
        let m = Masker::new([long.as_str()]);
        // What `echo "$S" | base64` prints: 76 columns a line.
        let wrapped = STANDARD.encode(format!("{long}\n"));
        for line in wrapped.as_bytes().chunks(76).filter(|c| c.len() >= 16) {
            let line = std::str::from_utf8(line).unwrap();
            assert_eq!(masked(&m, line), "***", "{line}");
        }
    }

    #[test]
    fn hex_in_both_cases() {
        let secret = "hunter2-secret";
        let m = Masker::new([secret]);
        let lower: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let upper: String = secret.bytes().map(|b| format!("{b:02X}")).collect();
        assert_eq!(masked(&m, &format!("x{lower}y")), "x***y");
        assert_eq!(masked(&m, &format!("x{upper}y")), "x***y");
    }

    #[test]
    fn url_encoded_forms() {
        let secret = "p@ss/w rd+~é";
        let m = Masker::new([secret]);
        for form in [
            // Every byte but the unreserved ones, both cases, `%20` and `+` for space.
            "p%40ss%2Fw%20rd%2B~%C3%A9",
            "p%40ss%2fw%20rd%2b~%c3%a9",
            "p%40ss%2Fw+rd%2B~%C3%A9",
            "p%40ss%2fw+rd%2b~%c3%a9",
            // Python's quote() keeps `/`; HTML forms escape `~`.
            "p%40ss/w%20rd%2B~%C3%A9",
            "p%40ss%2Fw+rd%2B%7E%C3%A9",
        ] {
            assert_eq!(masked(&m, &format!("?q={form}&x")), "?q=***&x", "{form}");
        }
    }

    #[test]
    fn json_escaped_forms() {
        let secret = "a\"b\\c\nd\te\u{1}é😀/<x>";
        let m = Masker::new([secret]);
        let serde = serde_json::to_string(secret).unwrap();
        assert_eq!(
            masked(&m, &format!("{{\"k\":{serde}}}")),
            "{\"k\":\"***\"}",
            "{serde}"
        );
        // Built by hand: Python's json.dumps (ensure_ascii), PHP's `\/`, Go's HTML escapes.
        let python = r#"a\"b\\c\nd\te\u0001\u00e9\ud83d\ude00/<x>"#;
        let python_upper = r#"a\"b\\c\nd\te\u0001\u00E9\uD83D\uDE00/<x>"#;
        let php = r#"a\"b\\c\nd\te\u0001é😀\/<x>"#;
        let go = r#"a\"b\\c\nd\te\u0001é😀/\u003cx\u003e"#;
        let doubled = "a\"b\\\\c\nd\te\u{1}é😀/<x>";
        assert_eq!(masked(&m, doubled), "***", "backslashes doubled");
        for form in [python, python_upper, php, go] {
            assert_eq!(masked(&m, &format!("\"{form}\"")), "\"***\"", "{form}");
        }
    }

    #[test]
    fn base64_at_every_offset_in_a_longer_stream() {
        let secret = "s3cr3t-value-of-20b!";
        assert_eq!(secret.len(), 20);
        let m = Masker::new([secret]);
        for engine in [STANDARD, URL_SAFE] {
            for lead in ["", "x", "xy", "xyz", "abcd"] {
                for tail in ["", "1", "12", "123", " and more text"] {
                    let stream = format!("{lead}{secret}{tail}");
                    let encoded = engine.encode(&stream);
                    // The characters whose 6 bits all come from the secret are hidden;
                    // what is left shows at most a few bits of it at each edge.
                    let start_bits = 8 * lead.len();
                    let end_bits = start_bits + 8 * secret.len();
                    let first = start_bits.div_ceil(6);
                    let last = end_bits / 6;
                    let got = masked(&m, &encoded);
                    assert!(
                        got.starts_with(&encoded[..first])
                            && got[first..].starts_with("***")
                            && encoded[last..].ends_with(&got[first + 3..]),
                        "{lead:?} {tail:?}: {encoded} → {got}"
                    );
                    // Nothing that decodes to 3 bytes of the secret is left.
                    let rest = got.replace("***", " ");
                    for word in rest.split(' ') {
                        for i in 0..word.len().saturating_sub(3) {
                            let window = &word[i..i + 4];
                            if let Ok(bytes) = engine.decode(window) {
                                assert!(
                                    !secret.as_bytes().windows(3).any(|w| w == bytes.as_slice()),
                                    "{window} of {got}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn jwt_whole_and_each_segment() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"repo:org/app:ref:refs/heads/main"}"#);
        let signature = URL_SAFE_NO_PAD.encode([7u8; 64]);
        let jwt = format!("{header}.{payload}.{signature}");
        let m = Masker::new([jwt.as_str()]);
        assert_eq!(masked(&m, &format!("t={jwt};")), "t=***;");
        for segment in [&header, &payload, &signature] {
            assert_eq!(masked(&m, &format!("[{segment}]")), "[***]", "{segment}");
        }
        // `cut -d. -f2 | base64 -d` needs padding: with it, still masked.
        let padded = STANDARD.encode(r#"{"sub":"repo:org/app:ref:refs/heads/main"}"#);
        assert!(!masked(&m, &padded).contains(&payload[4..20]));
        // Only JWT-shaped values are split at their dots.
        let m = Masker::new(["alpha.beta.gamma"]);
        assert_eq!(masked(&m, "alpha beta"), "alpha beta");
    }

    #[test]
    fn union_masks_both() {
        let m = Masker::new(["first-secret"]).union(&Masker::new(["second-secret"]));
        assert_eq!(masked(&m, "first-secret second-secret"), "*** ***");
        assert!(!format!("{m:?}").contains("secret"), "{m:?}");
    }

    /// Feeds `line` in pieces of `size` bytes through `mask_piece`/`mask_end`.
    fn in_pieces(m: &Masker, line: &[u8], size: usize) -> Vec<u8> {
        let mut carry = Vec::new();
        let mut out = Vec::new();
        let mut pieces = line.chunks(size).peekable();
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_some() {
                out.extend(m.mask_piece(&mut carry, piece));
                assert!(carry.len() < m.longest.max(1) + size, "carry is bounded");
            } else {
                out.extend(m.mask_end(&mut carry, piece));
            }
        }
        out
    }

    #[test]
    fn secrets_across_cut_points() {
        let secret = "cut-across-secret-value";
        let m = Masker::new([secret]);
        let size = pipewright_containers::MAX_LINE;
        for at in (size - secret.len() - 2)..(size + 2) {
            let line = format!("{}{secret}{}", "x".repeat(at), "y".repeat(100));
            let got = in_pieces(&m, line.as_bytes(), size);
            assert_eq!(got, m.mask(line.as_bytes()).as_ref(), "secret at {at}");
            let expected = format!("{}***{}", "x".repeat(at), "y".repeat(100));
            assert_eq!(String::from_utf8(got).unwrap(), expected, "secret at {at}");
        }
        // Its forms too, in small pieces, and several secrets in one line.
        let hex = hex::encode(secret);
        let line = format!("a{secret}b{hex}c{}d", STANDARD.encode(format!("z{secret}")));
        for size in 1..40 {
            let got = in_pieces(&m, line.as_bytes(), size);
            assert_eq!(got, m.mask(line.as_bytes()).as_ref(), "pieces of {size}");
            assert!(!String::from_utf8_lossy(&got).contains("secret"), "{size}");
        }
        // Without secrets every byte comes through once, in order.
        let plain = Masker::default();
        let text: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(in_pieces(&plain, &text, 7), text);
    }

    #[test]
    fn a_longer_needle_that_grows_past_a_cut_wins() {
        // "abcd-1234" is a line of the second secret; the whole value is longer.
        let m = Masker::new(["abcd-1234", "abcd-1234-and-more"]);
        let line = b"..abcd-1234-and-more..";
        for size in 1..line.len() {
            assert_eq!(in_pieces(&m, line, size), b"..***..", "pieces of {size}");
        }
    }
}
