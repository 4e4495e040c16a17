//! `${{ … }}` templates: the few values that `image:`, `with:` and `concurrency.group` may
//! interpolate. Nothing else is evaluated, and templates never reach a `run:` script.

use std::fmt;

/// A value a template may refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// `sha`: the full commit id.
    Sha,
    /// `short_sha`: its first 8 characters.
    ShortSha,
    /// `ref_name`: the branch or tag name.
    RefName,
    /// `repo`: `owner/name`.
    Repo,
    /// `inputs.NAME`: a dispatch input (its default outside dispatches).
    Input(String),
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Sha => f.write_str("sha"),
            Var::ShortSha => f.write_str("short_sha"),
            Var::RefName => f.write_str("ref_name"),
            Var::Repo => f.write_str("repo"),
            Var::Input(name) => write!(f, "inputs.{name}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A template problem: which `${{` (0-based, for locating it in the file) and what.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TemplateError {
    pub occurrence: usize,
    pub message: String,
}

pub(crate) const EXPRESSIONS: &str = "sha, short_sha, ref_name, repo, inputs.NAME";

impl Template {
    /// A template without any expression.
    pub fn literal(text: impl Into<String>) -> Template {
        Template {
            parts: vec![Part::Text(text.into())],
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut occurrence = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else {
                return Err(TemplateError {
                    occurrence,
                    message: "`${{` without its closing `}}`".into(),
                });
            };
            let expr = after[..end].trim();
            let var = match expr {
                "sha" => Var::Sha,
                "short_sha" => Var::ShortSha,
                "ref_name" => Var::RefName,
                "repo" => Var::Repo,
                _ => match expr.strip_prefix("inputs.") {
                    Some(name) if is_identifier(name) => Var::Input(name.to_string()),
                    _ => {
                        return Err(TemplateError {
                            occurrence,
                            message: format!(
                                "unknown expression `{expr}` in `${{{{ }}}}`; expected one of: {EXPRESSIONS}"
                            ),
                        });
                    }
                },
            };
            parts.push(Part::Var(var));
            rest = &after[end + 2..];
            occurrence += 1;
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The variables used, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Text(_) => None,
        })
    }

    /// Renders the template; `lookup` gives each variable's value.
    pub fn render(&self, lookup: impl Fn(&Var) -> String) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Var(v) => lookup(v),
            })
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Var(v) => write!(f, "${{{{ {v} }}}}")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_render() {
        let t = Template::parse("reg/app:${{ short_sha }}-${{inputs.mode}}").unwrap();
        assert_eq!(
            t.vars().cloned().collect::<Vec<_>>(),
            vec![Var::ShortSha, Var::Input("mode".into())]
        );
        let out = t.render(|v| match v {
            Var::ShortSha => "abc12345".into(),
            _ => "plan".into(),
        });
        assert_eq!(out, "reg/app:abc12345-plan");
        assert_eq!(t.to_string(), "reg/app:${{ short_sha }}-${{ inputs.mode }}");
    }

    #[test]
    fn errors() {
        assert_eq!(Template::parse("a ${{ sha").unwrap_err().occurrence, 0);
        let e = Template::parse("${{ sha }} ${{ github.sha }}").unwrap_err();
        assert_eq!(e.occurrence, 1);
        assert!(e.message.contains("github.sha"), "{}", e.message);
    }
}
