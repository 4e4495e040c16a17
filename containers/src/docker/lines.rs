//! Cutting a container's output into lines per stream, and a long line into pieces, in
//! bounded memory.

use crate::{LogSink, MAX_LINE, Stream};

/// Cuts a container's output into lines per stream. Holds at most one partial line per
/// stream, itself at most `MAX_LINE + 1` bytes (the extra byte is a `\r` that may turn out
/// to be part of a `\r\n`).
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    pub(super) fn push(
        &mut self,
        stream: Stream,
        mut data: &[u8],
        sink: &mut dyn LogSink,
    ) -> std::io::Result<()> {
        let partial = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = data.split_at(newline);
            data = &rest[1..];
            if partial.is_empty() {
                emit_line(stream, line, sink)?;
            } else {
                partial.extend_from_slice(line);
                emit_line(stream, partial, sink)?;
                partial.clear();
            }
        }
        partial.extend_from_slice(data);
        if partial.len() > MAX_LINE + 1 {
            let whole = partial.len() - partial.len() % MAX_LINE;
            // Keep at least two bytes so that a trailing `\r` is still judged with what follows.
            let cut = if partial.len() - whole < 2 {
                whole - MAX_LINE
            } else {
                whole
            };
            // The line goes on in what is kept.
            for piece in partial[..cut].chunks(MAX_LINE) {
                sink.piece(stream, piece)?;
            }
            partial.drain(..cut);
        }
        Ok(())
    }

    /// Delivers the partial lines left when the output has ended.
    pub(super) fn finish(&mut self, sink: &mut dyn LogSink) -> std::io::Result<()> {
        for (stream, partial) in [
            (Stream::Stdout, &mut self.stdout),
            (Stream::Stderr, &mut self.stderr),
        ] {
            if !partial.is_empty() {
                emit_line(stream, partial, sink)?;
                partial.clear();
            }
        }
        Ok(())
    }
}

/// A complete line without its ending, in `MAX_LINE` pieces when longer (the last one
/// through [`LogSink::line`]).
pub(super) fn emit_line(
    stream: Stream,
    line: &[u8],
    sink: &mut dyn LogSink,
) -> std::io::Result<()> {
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    while line.len() > MAX_LINE {
        let (piece, rest) = line.split_at(MAX_LINE);
        sink.piece(stream, piece)?;
        line = rest;
    }
    sink.line(stream, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Lines(Vec<(Stream, Vec<u8>)>);

    impl LogSink for Lines {
        fn line(&mut self, stream: Stream, line: &[u8]) -> std::io::Result<()> {
            self.0.push((stream, line.to_vec()));
            Ok(())
        }
    }

    /// Lines, each with the pieces it came in.
    #[derive(Default)]
    struct Pieces {
        lines: Vec<Vec<Vec<u8>>>,
        open: Vec<Vec<u8>>,
    }

    impl LogSink for Pieces {
        fn line(&mut self, _: Stream, line: &[u8]) -> std::io::Result<()> {
            self.open.push(line.to_vec());
            self.lines.push(std::mem::take(&mut self.open));
            Ok(())
        }
        fn piece(&mut self, _: Stream, piece: &[u8]) -> std::io::Result<()> {
            self.open.push(piece.to_vec());
            Ok(())
        }
    }

    fn split(chunks: &[(Stream, &[u8])]) -> Vec<(Stream, Vec<u8>)> {
        let mut splitter = LineSplitter::default();
        let mut sink = Lines::default();
        for (stream, chunk) in chunks {
            splitter.push(*stream, chunk, &mut sink).unwrap();
        }
        splitter.finish(&mut sink).unwrap();
        sink.0
    }

    fn out(line: &[u8]) -> (Stream, Vec<u8>) {
        (Stream::Stdout, line.to_vec())
    }

    #[test]
    fn lines_across_chunks_and_streams() {
        let got = split(&[
            (Stream::Stdout, b"a\r\nb"),
            (Stream::Stderr, b"x"),
            (Stream::Stdout, b"c\n\nd"),
            (Stream::Stderr, b"y\n"),
        ]);
        assert_eq!(
            got,
            [
                out(b"a"),
                out(b"bc"),
                out(b""),
                (Stream::Stderr, b"xy".to_vec()),
                out(b"d"),
            ]
        );
    }

    #[test]
    fn long_lines_come_in_max_line_pieces() {
        let x = vec![b'x'; MAX_LINE];
        let mut line = [x.as_slice(), x.as_slice(), b"y"].concat();
        line.push(b'\n');
        for chunk_size in [1000, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, line.len()] {
            let chunks: Vec<_> = line
                .chunks(chunk_size)
                .map(|c| (Stream::Stdout, c))
                .collect();
            assert_eq!(
                split(&chunks),
                [out(&x), out(&x), out(b"y")],
                "{chunk_size}"
            );
        }
    }

    #[test]
    fn pieces_say_that_their_line_goes_on() {
        let x = vec![b'x'; MAX_LINE];
        let long = [x.as_slice(), x.as_slice(), b"y"].concat();
        let exact = [x.as_slice(), x.as_slice()].concat();
        let text = [&long[..], b"\nshort\n", &exact[..], b"\r\n", &long[..]].concat();
        for chunk_size in [1000, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, text.len()] {
            let mut splitter = LineSplitter::default();
            let mut sink = Pieces::default();
            for chunk in text.chunks(chunk_size) {
                splitter.push(Stream::Stdout, chunk, &mut sink).unwrap();
            }
            splitter.finish(&mut sink).unwrap();
            let whole = |l: &Vec<Vec<u8>>| l.concat();
            assert_eq!(
                sink.lines.iter().map(whole).collect::<Vec<_>>(),
                [long.clone(), b"short".to_vec(), exact.clone(), long.clone()],
                "{chunk_size}"
            );
            let sizes: Vec<Vec<usize>> = sink
                .lines
                .iter()
                .map(|l| l.iter().map(Vec::len).collect())
                .collect();
            assert_eq!(
                sizes,
                [
                    vec![MAX_LINE, MAX_LINE, 1],
                    vec![5],
                    vec![MAX_LINE, MAX_LINE],
                    vec![MAX_LINE, MAX_LINE, 1]
                ],
                "{chunk_size}"
            );
            assert!(sink.open.is_empty());
        }
    }

    #[test]
    fn crlf_at_a_max_line_boundary() {
        let x = vec![b'x'; MAX_LINE];
        let line = [x.as_slice(), b"\r\n"].concat();
        for chunk_size in [1, 7, MAX_LINE, MAX_LINE + 1] {
            let chunks: Vec<_> = line
                .chunks(chunk_size)
                .map(|c| (Stream::Stdout, c))
                .collect();
            assert_eq!(split(&chunks), [out(&x)], "{chunk_size}");
        }
    }
}
