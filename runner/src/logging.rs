//! The process's own log: the filter (`RUST_LOG`, `PIPEWRIGHT_LOG` or `[log].level`), the
//! format (text or JSON lines), colour only on a terminal without `NO_COLOR`, and the
//! warnings `serve` gives at start about settings it cannot work without.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogConfig, LogFormat};

/// The filter a `[log].level` stands for: a bare level applies to Pipewright's own crates,
/// with other libraries at `warn` (or that level when it is more severe); anything else is
/// a filter in `RUST_LOG`'s syntax.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    let directives = match level.trim().to_ascii_lowercase().as_str() {
        "error" => "error".to_owned(),
        "warn" => "warn".to_owned(),
        l @ ("info" | "debug" | "trace") => {
            format!("warn,pipewright={l},pipewright_containers={l},pipewright_pipelines={l}")
        }
        _ => level.to_owned(),
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| e.to_string())
}

/// `RUST_LOG`, else `PIPEWRIGHT_LOG`, else the configured level.
fn chosen_filter(config: &LogConfig) -> EnvFilter {
    for var in ["RUST_LOG", "PIPEWRIGHT_LOG"] {
        if let Ok(text) = std::env::var(var)
            && !text.trim().is_empty()
        {
            match EnvFilter::builder().parse(&text) {
                Ok(filter) => return filter,
                Err(e) => eprintln!("warning: {var} ignored, not a log filter ({e}): {text}"),
            }
        }
    }
    filter(&config.level).unwrap_or_else(|_| EnvFilter::new("warn,pipewright=info"))
}

/// Whether to write colour codes: only to a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

/// Installs the process's log writer on standard error. Called once, first thing.
pub fn init(config: &LogConfig) {
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(chosen_filter(config))
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// What `serve` cannot do with these settings, one sentence each, for warnings at start.
pub fn missing_essentials(config: &Config) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if config.gitea.webhook_secret.is_none() {
        missing.push(
            "no [gitea].webhook_secret: every webhook is refused (401) until one is set, \
             the same secret as in Gitea's webhook settings",
        );
    }
    if config.gitea.url.is_none() {
        missing
            .push("no [gitea].url: repositories cannot be fetched and no status can be reported");
    }
    if config.gitea.token.is_none() {
        missing.push(
            "no [gitea].token: private repositories cannot be fetched and no status can be reported",
        );
    }
    let api = &config.api;
    if api.tokens.is_empty() && api.scoped_tokens.is_empty() && !api.read_public {
        missing.push(match config.ui.oauth() {
            None => "no [api].tokens and read_public = false: nobody can use the API or the web UI",
            // Gitea users still sign in to the web UI.
            Some(_) => "no [api].tokens and read_public = false: nobody can use the API",
        });
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("")));
        assert!(!colour(true, Some("1")));
        assert!(!colour(false, None));
    }

    #[test]
    fn levels_and_filters() {
        assert!(filter("debug").is_ok());
        assert!(filter("warn,pipewright=trace").is_ok());
        assert!(filter("pipewright=loud").is_err());
    }

    #[test]
    fn defaults_miss_every_essential() {
        let missing = missing_essentials(&Config::default());
        assert_eq!(missing.len(), 4, "{missing:?}");
        assert!(missing[0].contains("webhook_secret"));
        assert!(missing[3].contains("nobody can use the API"));
    }
}
