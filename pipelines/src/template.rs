//! `${{ … }}` templates: the few values that `image:`, `with:` and `concurrency.group` may
//! interpolate, alone or through a function (`lower(repo)`). Nothing else is evaluated,
//! and templates never reach a `run:` script.

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
    /// `repo_owner`: the `owner` of `repo`.
    RepoOwner,
    /// `repo_name`: the `name` of `repo`.
    RepoName,
    /// `actor`: who caused the run (the event's sender login, `api` for a dispatch
    /// through the API, `schedule` for a schedule), as the run and its identity token say.
    Actor,
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
            Var::RepoOwner => f.write_str("repo_owner"),
            Var::RepoName => f.write_str("repo_name"),
            Var::Actor => f.write_str("actor"),
            Var::Input(name) => write!(f, "inputs.{name}"),
        }
    }
}

/// A function applied to a variable's value: `lower(repo)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    /// Lower case: image names must be, Gitea's owner and repository names need not be.
    Lower,
}

impl Func {
    fn parse(name: &str) -> Option<Func> {
        match name {
            "lower" => Some(Func::Lower),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Func::Lower => "lower",
        }
    }

    fn apply(self, value: String) -> String {
        match self {
            Func::Lower => value.to_lowercase(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
    Call(Func, Var),
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

pub(crate) const EXPRESSIONS: &str =
    "sha, short_sha, ref_name, repo, repo_owner, repo_name, actor, inputs.NAME, lower(…)";

pub(crate) const FUNCTIONS: &str = "lower";

/// The variable an expression names, or why it names none.
fn parse_var(expr: &str) -> Result<Var, String> {
    Ok(match expr {
        "sha" => Var::Sha,
        "short_sha" => Var::ShortSha,
        "ref_name" => Var::RefName,
        "repo" => Var::Repo,
        "repo_owner" => Var::RepoOwner,
        "repo_name" => Var::RepoName,
        "actor" => Var::Actor,
        _ => match expr.strip_prefix("inputs.") {
            Some(name) if is_identifier(name) => Var::Input(name.to_string()),
            _ => {
                return Err(format!(
                    "unknown expression `{expr}` in `${{{{ }}}}`; expected one of: {EXPRESSIONS}"
                ));
            }
        },
    })
}

/// An expression: a variable, or a function of one (`lower(repo)`).
fn parse_expr(expr: &str) -> Result<Part, String> {
    let Some((name, rest)) = expr.split_once('(') else {
        return parse_var(expr).map(Part::Var);
    };
    let name = name.trim_end();
    let Some(func) = Func::parse(name) else {
        return Err(format!(
            "unknown function `{name}` in `${{{{ }}}}`; expected one of: {FUNCTIONS}"
        ));
    };
    let Some(arg) = rest.strip_suffix(')') else {
        return Err(format!("`{name}(` without its closing `)`"));
    };
    let arg = arg.trim();
    if arg.contains(['(', ')']) {
        return Err(format!(
            "`{name}(…)` takes a variable, e.g. `{name}(repo)`, found `{arg}`"
        ));
    }
    parse_var(arg).map(|var| Part::Call(func, var))
}

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
            let part = parse_expr(expr).map_err(|message| TemplateError {
                occurrence,
                message,
            })?;
            parts.push(part);
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
            Part::Var(v) | Part::Call(_, v) => Some(v),
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
                Part::Call(func, v) => func.apply(lookup(v)),
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
                Part::Call(func, v) => write!(f, "${{{{ {}({v}) }}}}", func.name())?,
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
    fn names_of_the_repository_and_lower() {
        let t = Template::parse(
            "reg/${{ lower(repo) }}:${{lower( ref_name )}}-${{ repo_owner }}-${{ repo_name }}-${{ actor }}",
        )
        .unwrap();
        assert_eq!(
            t.vars().cloned().collect::<Vec<_>>(),
            vec![
                Var::Repo,
                Var::RefName,
                Var::RepoOwner,
                Var::RepoName,
                Var::Actor
            ]
        );
        let out = t.render(|v| match v {
            Var::Repo => "Arcodange-Org/ERP".into(),
            Var::RefName => "Main".into(),
            Var::RepoOwner => "Arcodange-Org".into(),
            Var::RepoName => "ERP".into(),
            Var::Actor => "Gab".into(),
            _ => unreachable!(),
        });
        assert_eq!(out, "reg/arcodange-org/erp:main-Arcodange-Org-ERP-Gab");
        assert_eq!(
            Template::parse(&t.to_string()).unwrap(),
            t,
            "{t} reads back as itself"
        );
    }

    #[test]
    fn function_errors() {
        for (text, needle) in [
            ("${{ upper(repo) }}", "unknown function `upper`"),
            ("${{ lower(repo }}", "without its closing `)`"),
            ("${{ lower(lower(repo)) }}", "takes a variable"),
            (
                "${{ lower(github.repo) }}",
                "unknown expression `github.repo`",
            ),
            ("${{ lower() }}", "unknown expression ``"),
            ("${{ owner }}", "unknown expression `owner`"),
        ] {
            let e = Template::parse(text).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }

    #[test]
    fn errors() {
        assert_eq!(Template::parse("a ${{ sha").unwrap_err().occurrence, 0);
        let e = Template::parse("${{ sha }} ${{ github.sha }}").unwrap_err();
        assert_eq!(e.occurrence, 1);
        assert!(e.message.contains("github.sha"), "{}", e.message);
    }
}
