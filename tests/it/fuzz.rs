//! A bounded, deterministic fuzz pass in the normal test run (stable Rust, no libFuzzer):
//! mutations of a seed corpus fed to a target that must never panic.
//!
//! The coverage-guided targets live in `fuzz/` (cargo-fuzz); this pass runs the same
//! targets on the same corpus with a seeded mutator, so every test run tries some
//! thousands of hostile inputs. A panicking input is written under the target directory
//! and the test fails naming that file.

use std::{
    fs,
    io::{Seek, SeekFrom, Write},
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

/// The seed corpus of a cargo-fuzz target.
fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn pipeline_parser_survives_mutated_files() {
    fuzz_bounded(
        "pipeline_parse",
        &corpus("pipeline_parse"),
        // About five seconds of a debug build: glob compilation dominates unoptimized.
        8_000,
        pipewright_pipelines::fuzzing::pipeline_parse,
    );
}

#[test]
fn webhook_decoder_survives_mutated_deliveries() {
    fuzz_bounded(
        "webhook_decode",
        &corpus("webhook_decode"),
        // JSON decoding is fast: many more inputs than the pipeline pass in the same time.
        60_000,
        pipewright::fuzzing::webhook_decode,
    );
}

/// Tokens that change the shape of a YAML or JSON document, inserted by the mutator.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"- ",
    b": ",
    b", ",
    b"&a ",
    b"*a",
    b"<<: *a",
    b"!!",
    b"!!str ",
    b"? ",
    b"|\n",
    b">-\n",
    b"\"",
    b"'",
    b"#",
    b"\n",
    b"\n  ",
    b"\n    - ",
    b"\r\n",
    b"\t",
    b"---\n",
    b"...\n",
    b"%YAML 1.2\n",
    b"${{ ",
    b" }}",
    b"${{ inputs.x }}",
    b"\\u00e9",
    b"\xc3\xa9",
    b"\xe6\x97\xa5",
    b"\xff",
    b"\0",
    b"~",
    b"null",
    b"18446744073709551615",
    b"-1",
    b"99999999999999999999g",
    b"9999999999h",
    b"1e999",
    b"*/0 * * * *",
    b"PIPEWRIGHT_*",
    b"*: kv/x#*",
    b"#*",
    // JSON and payload fields, for the webhook decoder.
    b"\"ref\": ",
    b"\"refs/heads/",
    b"\"0000000000000000000000000000000000000000\"",
    b"\"--upload-pack=x\"",
    b"\"../",
    b"\\\"",
    b"\\ud800",
    b"1e400",
    b"[[[[[[[[[[[[[[[[",
    b"true",
];

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Inputs grow no larger than this, so one iteration stays cheap.
const MAX_INPUT: usize = 64 << 10;

/// One random change to `input`, drawing on the corpus for splices.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let at = |rng: &mut Rng, input: &Vec<u8>| rng.below(input.len() + 1);
    match rng.below(8) {
        // Flip a bit.
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        // Insert a random byte.
        1 => {
            let i = at(rng, input);
            input.insert(i, rng.next() as u8);
        }
        // Delete a range.
        2 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = 1 + rng.below((input.len() - i).min(64));
            input.drain(i..i + n);
        }
        // Splice in a piece of another corpus file.
        3 => {
            let other = rng.pick(corpus);
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(256));
                let i = at(rng, input);
                input.splice(i..i, other[from..from + n].iter().copied());
            }
        }
        // Replace the tail with another file's tail.
        4 => {
            let other = rng.pick(corpus);
            let i = at(rng, input);
            let from = rng.below(other.len() + 1);
            input.truncate(i);
            input.extend_from_slice(&other[from..]);
        }
        // A long run of one token (deep nesting, long scalars, many aliases).
        5 => {
            let token = *rng.pick(TOKENS);
            let most = if rng.below(4) == 0 { 5_000 } else { 80 };
            let times = 1 + rng.below(most);
            let i = at(rng, input);
            input.splice(i..i, token.repeat(times));
        }
        // Duplicate a range in place.
        6 if !input.is_empty() => {
            let i = rng.below(input.len());
            let n = 1 + rng.below((input.len() - i).min(512));
            let piece = input[i..i + n].to_vec();
            input.splice(i..i, piece);
        }
        // Insert a structural token.
        _ => {
            let token = *rng.pick(TOKENS);
            let i = at(rng, input);
            input.splice(i..i, token.iter().copied());
        }
    }
    input.truncate(MAX_INPUT);
}

/// Runs `target` on `iterations` mutations of the files in `corpus_dir` (each file alone
/// first), deterministically from a seed derived from `name`. Each input is also kept in
/// `<target tmp>/fuzz/<name>.current` while it runs, so an abort that no panic handler sees
/// (stack overflow, out of memory) still leaves the input behind. A panic fails the test
/// with the input saved as `<target tmp>/fuzz/<name>-<iteration>.crash`.
fn fuzz_bounded(name: &str, corpus_dir: &Path, iterations: usize, target: impl Fn(&[u8])) {
    let mut paths: Vec<PathBuf> = fs::read_dir(corpus_dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", corpus_dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let corpus: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    assert!(
        !corpus.is_empty(),
        "the corpus {} is empty",
        corpus_dir.display()
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    fs::create_dir_all(&out).unwrap();
    let mut current = fs::File::create(out.join(format!("{name}.current"))).unwrap();
    let seed = name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng(seed | 1);
    // Some mutants are kept and mutated further, so that changes compound (a blind
    // stand-in for the inputs libFuzzer keeps for their coverage).
    let mut pool: Vec<Vec<u8>> = corpus.clone();
    for iteration in 0..corpus.len() + iterations {
        let input = match corpus.get(iteration) {
            Some(seed_file) => seed_file.clone(),
            None => {
                let mut input = rng.pick(&pool).clone();
                for _ in 0..1 + rng.below(6) {
                    mutate(&mut rng, &mut input, &corpus);
                }
                input
            }
        };
        current.seek(SeekFrom::Start(0)).unwrap();
        current.set_len(0).unwrap();
        current.write_all(&input).unwrap();
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| target(&input))) {
            let saved = out.join(format!("{name}-{iteration}.crash"));
            fs::write(&saved, &input).unwrap();
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!(
                "fuzz target `{name}` panicked on iteration {iteration}: {why}\ninput saved as {}",
                saved.display()
            );
        }
        if pool.len() < 512 && rng.below(8) == 0 {
            pool.push(input);
        } else if rng.below(8) == 0 {
            let i = rng.below(pool.len());
            pool[i] = input;
        }
    }
}
