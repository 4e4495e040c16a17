//! Step output with ANSI escape codes as HTML: SGR colours and styles become `<span>`s
//! with classes (`ansi-fg-red`, `ansi-bright-fg-red`, `ansi-bg-red`, `ansi-bright-bg-red`,
//! `ansi-bold`, `ansi-italic`, `ansi-underline`), every other escape sequence is dropped,
//! and every text byte is escaped: no escape byte and no markup of the log reaches a page.

use std::fmt::Write;

use anstyle_parse::{Params, Parser, Perform};

const COLOURS: [&str; 8] = [
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
];

/// A colour: one of the eight, plain or bright.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Colour {
    index: u8,
    bright: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Style {
    fg: Option<Colour>,
    bg: Option<Colour>,
    bold: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn classes(&self) -> String {
        let mut out = Vec::new();
        for (colour, kind) in [(self.fg, "fg"), (self.bg, "bg")] {
            if let Some(c) = colour {
                let bright = if c.bright { "bright-" } else { "" };
                out.push(format!(
                    "ansi-{bright}{kind}-{}",
                    COLOURS[usize::from(c.index)]
                ));
            }
        }
        for (on, class) in [
            (self.bold, "ansi-bold"),
            (self.italic, "ansi-italic"),
            (self.underline, "ansi-underline"),
        ] {
            if on {
                out.push(class.to_owned());
            }
        }
        out.join(" ")
    }

    /// Applies one SGR sequence's parameters.
    fn apply(&mut self, params: &Params) {
        let mut values = params.iter().flat_map(|p| p.iter().copied());
        let mut any = false;
        while let Some(code) = values.next() {
            any = true;
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => self.bold = false,
                23 => self.italic = false,
                24 => self.underline = false,
                30..=37 => self.fg = Some(plain(code - 30)),
                39 => self.fg = None,
                40..=47 => self.bg = Some(plain(code - 40)),
                49 => self.bg = None,
                90..=97 => self.fg = Some(bright(code - 90)),
                100..=107 => self.bg = Some(bright(code - 100)),
                38 | 48 => {
                    // 256 colours (`5;n`) keep their first sixteen; true colours are dropped.
                    let colour = match values.next() {
                        Some(5) => values.next().and_then(|n| match n {
                            0..=7 => Some(plain(n)),
                            8..=15 => Some(bright(n - 8)),
                            _ => None,
                        }),
                        Some(2) => {
                            values.next();
                            values.next();
                            values.next();
                            None
                        }
                        _ => None,
                    };
                    if code == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
        }
        if !any {
            *self = Style::default();
        }
    }
}

fn plain(index: u16) -> Colour {
    Colour {
        index: index as u8,
        bright: false,
    }
}

fn bright(index: u16) -> Colour {
    Colour {
        index: index as u8,
        bright: true,
    }
}

/// Renders log lines one by one; colours set on one line last into the next, as in a
/// terminal.
#[derive(Debug, Default)]
pub struct Ansi {
    style: Style,
}

struct Line<'a> {
    out: String,
    style: &'a mut Style,
    /// The style of the open `<span>`, if one is open.
    open: Option<Style>,
}

impl Line<'_> {
    fn text(&mut self, c: char) {
        if self.open != Some(*self.style) {
            if self.open.take().is_some() {
                self.out.push_str("</span>");
            }
            if *self.style != Style::default() {
                let _ = write!(self.out, "<span class=\"{}\">", self.style.classes());
                self.open = Some(*self.style);
            }
        }
        match c {
            '&' => self.out.push_str("&amp;"),
            '<' => self.out.push_str("&lt;"),
            '>' => self.out.push_str("&gt;"),
            '"' => self.out.push_str("&quot;"),
            '\'' => self.out.push_str("&#39;"),
            c => self.out.push(c),
        }
    }
}

impl Perform for Line<'_> {
    fn print(&mut self, c: char) {
        if !c.is_control() {
            self.text(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        if byte == b'\t' {
            self.text('\t');
        }
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: u8) {
        if action == b'm' && intermediates.is_empty() && !ignore {
            self.style.apply(params);
        }
    }
}

impl Ansi {
    /// One line (without its newline) as HTML: text and `<span>`s, nothing else.
    pub fn line(&mut self, bytes: &[u8]) -> String {
        let mut line = Line {
            out: String::with_capacity(bytes.len() + 16),
            style: &mut self.style,
            open: None,
        };
        let mut parser = Parser::<anstyle_parse::DefaultCharAccumulator>::new();
        for byte in bytes {
            parser.advance(&mut line, *byte);
        }
        if line.open.is_some() {
            line.out.push_str("</span>");
        }
        line.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &[u8]) -> String {
        Ansi::default().line(text)
    }

    #[test]
    fn colours_and_styles_become_spans() {
        assert_eq!(
            render(b"\x1b[32mgreen\x1b[0m plain"),
            "<span class=\"ansi-fg-green\">green</span> plain"
        );
        assert_eq!(
            render(b"\x1b[1;91;44mx\x1b[22my\x1b[m z"),
            "<span class=\"ansi-bright-fg-red ansi-bg-blue ansi-bold\">x</span><span class=\"ansi-bright-fg-red ansi-bg-blue\">y</span> z"
        );
        assert_eq!(
            render(b"\x1b[3;4;38;5;9mi\x1b[38;2;1;2;3mt"),
            "<span class=\"ansi-bright-fg-red ansi-italic ansi-underline\">i</span><span class=\"ansi-italic ansi-underline\">t</span>"
        );
        assert_eq!(
            render(b"\x1b[105;30mb"),
            "<span class=\"ansi-fg-black ansi-bright-bg-magenta\">b</span>"
        );
    }

    #[test]
    fn a_colour_lasts_into_the_next_line() {
        let mut ansi = Ansi::default();
        assert_eq!(
            ansi.line(b"\x1b[31ma"),
            "<span class=\"ansi-fg-red\">a</span>"
        );
        assert_eq!(
            ansi.line(b"b\x1b[0mc"),
            "<span class=\"ansi-fg-red\">b</span>c"
        );
        assert_eq!(ansi.line(b"d"), "d");
    }

    #[test]
    fn markup_is_escaped_and_other_sequences_are_dropped() {
        assert_eq!(
            render(b"<script>alert('x\")</script> & done"),
            "&lt;script&gt;alert(&#39;x&quot;)&lt;/script&gt; &amp; done"
        );
        // OSC (a title, a hyperlink), cursor moves, erase, a bell, a carriage return.
        assert_eq!(
            render(b"\x1b]0;title\x07\x1b]8;;https://evil/\x1b\\link\x1b]8;;\x1b\\\x1b[2K\x1b[1A\r\x07ok"),
            "linkok"
        );
        // Broken escapes: an unfinished CSI at the end, ESC alone, a CSI with junk, DCS.
        let out = render(b"a\x1b[31;\x1b b\x1b[<>?z c\x1bP1;2qdata\x1b\\d\x1b[");
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains('a') && out.ends_with('d'), "{out:?}");
        // Bytes that are not UTF-8 and C1 controls.
        let out = render(b"x\xff\xfe\xc2\x9b31my");
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(out.starts_with('x') && out.ends_with('y'), "{out:?}");
        // Spans inside the text cannot be forged.
        let out = render(b"\x1b[31m<span class=\"x\">\x1b[0m");
        assert_eq!(
            out,
            "<span class=\"ansi-fg-red\">&lt;span class=&quot;x&quot;&gt;</span>"
        );
    }

    #[test]
    fn a_megabyte_line_is_rendered_whole() {
        let mut line = Vec::new();
        for _ in 0..(1 << 20) / 16 {
            line.extend_from_slice(b"\x1b[33m<b>&\x1b[0m..");
        }
        let out = render(&line);
        assert_eq!(out.matches("&lt;b&gt;&amp;").count(), (1 << 20) / 16);
        assert!(!out.contains('\x1b') && !out.contains("<b>"));
    }
}
