//! How runs are presented outside the store: the link to a run's page and descriptions
//! clipped to what Gitea shows, shared by the report layer and the HTTP layer.

/// A run's page: where a status links to.
pub fn run_url(public_url: &str, run_id: i64) -> String {
    format!("{public_url}/runs/{run_id}")
}

/// Status descriptions stay under Gitea's display width and DESIGN's 140 characters (run
/// descriptions are shown clipped the same way in the API and UI). Texts are masked before
/// they are stored, so a clip never cuts a secret that masking would then miss.
pub fn clip(text: &str) -> String {
    if text.chars().count() <= 139 {
        return text.to_string();
    }
    let mut out: String = text.chars().take(138).collect();
    out.push('…');
    out
}
