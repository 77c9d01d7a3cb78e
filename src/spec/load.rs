//! Loading a spec: the TOML file, then `SAERUN_<SECTION>__<KEY>` environment variables,
//! then `--set section.key=value` flags, last wins (figment). Every error is turned into
//! one message naming where the offending value came from: the file and line, the
//! environment variable, or the flag.

use super::Spec;
use crate::{Error, Result};
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use std::path::{Path, PathBuf};

/// Environment variables that configure the CLI rather than the spec. Spec variables
/// always contain `__` (section separator), which keeps the two apart.
const ENV_PREFIX: &str = "SAERUN_";

/// Where a spec came from: kept so later checks can point at the file line or flag that
/// supplied a bad value.
pub struct SpecOrigin {
    pub path: PathBuf,
    text: String,
    figment: Figment,
}

/// Load and type-check a spec. `sets` are the raw `--set key=value` arguments.
pub fn load_spec(path: &Path, sets: &[String]) -> Result<(Spec, SpecOrigin)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("cannot read spec file {}: {e}", path.display())))?;
    // Parse once with `toml` for syntax errors: its messages carry line and column.
    if let Err(e) = text.parse::<toml::Table>() {
        let at = e.span().map_or(String::new(), |span| {
            let line = text[..span.start].matches('\n').count() + 1;
            let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(", line {line}, column {column}")
        });
        return Err(Error::input(format!(
            "{}{at}: invalid TOML: {}",
            path.display(),
            e.message().trim_end()
        )));
    }
    let mut figment = Figment::new().merge(Toml::file_exact(path)).merge(
        Env::prefixed(ENV_PREFIX)
            .filter(|k| k.as_str().contains("__"))
            .split("__"),
    );
    for set in sets {
        figment = figment.merge(SetFlag::parse(set)?);
    }
    let origin = SpecOrigin {
        path: path.to_path_buf(),
        text,
        figment,
    };
    let spec: Spec = origin.figment.extract().map_err(|e| origin.render(e))?;
    Ok((spec, origin))
}

impl SpecOrigin {
    /// A bad-input error about the value at `key` (dotted path), naming where it came from.
    pub fn error(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::input(format!("{}: `{key}`: {what}", self.locate(key)))
    }

    /// "spec.toml, line 12", "environment variable SAERUN_TRAIN__LR" or "--set train.lr=0".
    pub fn locate(&self, key: &str) -> String {
        let file = self.path.display();
        match self.figment.find_metadata(key) {
            Some(md) if md.name.starts_with("--set") => md.name.to_string(),
            Some(md) if md.name.contains("environment") => {
                format!(
                    "environment variable {ENV_PREFIX}{}",
                    key.to_uppercase().replace('.', "__")
                )
            }
            _ => match line_of_key(&self.text, key) {
                Some(line) => format!("{file}, line {line}"),
                None => file.to_string(),
            },
        }
    }

    /// The fully layered spec as TOML (what a run records as `spec.resolved.toml`).
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    fn render(&self, errors: figment::Error) -> Error {
        use figment::error::Kind;
        let mut lines = Vec::new();
        for e in errors {
            let mut path = e.path.join(".");
            let what = match &e.kind {
                Kind::MissingField(field) => {
                    path = join_key(&path, field);
                    "is required but missing".to_string()
                }
                Kind::UnknownField(field, expected) => {
                    path = join_key(&path, field);
                    format!("unknown key; expected one of: {}", expected.join(", "))
                }
                Kind::UnknownVariant(v, expected) => {
                    format!(
                        "unknown value \"{v}\"; expected one of: {}",
                        expected.join(", ")
                    )
                }
                other => other.to_string(),
            };
            let key = if path.is_empty() {
                "(top level)".to_string()
            } else {
                path
            };
            lines.push(format!("{}: `{key}`: {what}", self.locate(&key)));
        }
        Error::input(lines.join("\n"))
    }
}

fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() || parent.ends_with(&format!(".{field}")) || parent == field {
        if parent.is_empty() {
            field.to_string()
        } else {
            parent.to_string()
        }
    } else {
        format!("{parent}.{field}")
    }
}

/// 1-based line of the deepest existing part of a dotted key in TOML text.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut span = None;
    for part in key.split('.') {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        span = Some(k.span());
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    let offset = span?.start;
    Some(text[..offset].matches('\n').count() + 1)
}

/// One `--set a.b=value` flag as a figment provider. The value is read as a TOML value
/// (`0.001`, `[1, 2]`, `true`, `"text"`); anything that is not valid TOML is taken as a
/// bare string, so `--set data.source=toy` works without quotes.
struct SetFlag {
    flag: String,
    key: String,
    value: Value,
}

impl SetFlag {
    fn parse(arg: &str) -> Result<SetFlag> {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(Error::input(format!(
                "--set {arg}: expected `section.key=value`"
            )));
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
            return Err(Error::input(format!(
                "--set {arg}: expected `section.key=value` with a dotted key"
            )));
        }
        let raw = raw.trim();
        let value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => Value::serialize(t.remove("v").expect("key v was just written"))
                .map_err(|e| Error::input(format!("--set {arg}: {e}")))?,
            Err(_) => Value::from(raw.to_string()),
        };
        Ok(SetFlag {
            flag: format!("--set {arg}"),
            key: key.to_string(),
            value,
        })
    }
}

impl Provider for SetFlag {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.flag.clone())
    }
    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        let nested = figment::util::nest(&self.key, self.value.clone());
        let dict = nested.into_dict().expect("nest of a dotted key is a dict");
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_lookup_finds_nested_keys() {
        let text = "[a]\nx = 1\n\n[b]\ny = 2\nz = [1, 2]\n";
        assert_eq!(line_of_key(text, "a.x"), Some(2));
        assert_eq!(line_of_key(text, "b.z"), Some(6));
        assert_eq!(line_of_key(text, "b"), Some(4));
        assert_eq!(line_of_key(text, "c.q"), None);
    }
}
