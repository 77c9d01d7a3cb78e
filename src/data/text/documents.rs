//! Reading documents (one string each) from data files: Parquet (a text column), JSONL
//! (a string field of one JSON object per line) and plain text (documents separated by
//! blank lines).
//!
//! Every error about the data itself is `Error::Input` and names the file, plus the
//! column, line or byte offset where there is one: the user has to fix the file or the
//! spec, not the program.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::{Error, Result};

/// File extensions `load_documents` reads (compared case-insensitively).
pub const DOCUMENT_EXTENSIONS: [&str; 3] = ["parquet", "jsonl", "txt"];

/// The documents of `files`, in file order and, within a file, in row/line order.
///
/// `text_column` names the Parquet column / JSONL field holding the text; plain-text files
/// ignore it. Null values (Parquet nulls, JSON `null`) are skipped: they are missing
/// documents, not empty ones. Every file must hold at least one document.
pub fn load_documents(files: &[PathBuf], text_column: &str) -> Result<Vec<String>> {
    load_first_documents(files, text_column, None)
}

/// Like [`load_documents`], keeping only the first `limit` documents: files after the one
/// that reaches the limit are not read at all (a spec's `data.max_documents` over a
/// many-shard dataset reads only the shards it needs).
pub fn load_first_documents(
    files: &[PathBuf],
    text_column: &str,
    limit: Option<usize>,
) -> Result<Vec<String>> {
    if files.is_empty() {
        return Err(Error::input("no data files to read documents from"));
    }
    let mut docs = Vec::new();
    for path in files {
        if limit.is_some_and(|l| docs.len() >= l) {
            break;
        }
        let before = docs.len();
        match extension(path).as_deref() {
            Some("parquet") => read_parquet(path, text_column, &mut docs)?,
            Some("jsonl") => read_jsonl(path, text_column, &mut docs)?,
            Some("txt") => read_txt(path, &mut docs)?,
            _ => {
                return Err(Error::input(format!(
                    "{}: unsupported data file type; accepted extensions: {}",
                    path.display(),
                    DOCUMENT_EXTENSIONS
                        .iter()
                        .map(|e| format!(".{e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
        if docs.len() == before {
            return Err(Error::input(format!(
                "{}: the file holds no documents",
                path.display()
            )));
        }
    }
    if let Some(l) = limit {
        docs.truncate(l);
    }
    Ok(docs)
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn read_parquet(path: &Path, column: &str, out: &mut Vec<String>) -> Result<()> {
    let bad = |what: &str, e: PolarsError| {
        Error::input(format!(
            "{}: {what} (not a readable Parquet file?): {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut reader = ParquetReader::new(file);
    let schema = reader
        .schema()
        .map_err(|e| bad("cannot read the schema", e))?;
    let Some(field) = schema.get(column) else {
        let names: Vec<String> = schema.iter_names().map(|n| format!("{n:?}")).collect();
        return Err(Error::input(format!(
            "{}: no column {column:?}; the file's columns are: {}",
            path.display(),
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    // Checked on the Parquet schema so a numeric column is reported as such instead of
    // failing (or being silently cast) while reading.
    if !matches!(
        field.dtype,
        ArrowDataType::Utf8 | ArrowDataType::LargeUtf8 | ArrowDataType::Utf8View
    ) {
        return Err(Error::input(format!(
            "{}: column {column:?} has type {:?}, expected strings (text)",
            path.display(),
            field.dtype
        )));
    }
    let df = reader
        .with_columns(Some(vec![column.to_string()]))
        .finish()
        .map_err(|e| bad("cannot read the data", e))?;
    let col = df
        .column(column)
        .map_err(|e| bad("cannot read the column", e))?;
    let strings = col.str().map_err(|e| {
        Error::input(format!(
            "{}: column {column:?} is not a string column: {e}",
            path.display()
        ))
    })?;
    let mut nulls = 0usize;
    for value in strings.downcast_iter().flat_map(|arr| arr.iter()) {
        match value {
            Some(s) => out.push(s.to_string()),
            None => nulls += 1,
        }
    }
    if nulls > 0 {
        tracing::warn!(
            "{}: skipped {nulls} null value(s) in column {column:?}",
            path.display()
        );
    }
    Ok(())
}

fn read_jsonl(path: &Path, field: &str, out: &mut Vec<String>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
    let text = utf8(path, &bytes)?;
    let mut nulls = 0usize;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{lineno}", path.display());
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            // serde_json's message ends in "at line 1 column N"; the line is ours to give.
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            Error::input(format!(
                "{}: not valid JSON at column {}: {msg}",
                at(),
                e.column()
            ))
        })?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(Error::input(format!(
                "{}: expected a JSON object per line, found {}",
                at(),
                json_kind(&value)
            )));
        };
        match obj.remove(field) {
            Some(serde_json::Value::String(s)) => out.push(s),
            Some(serde_json::Value::Null) => nulls += 1,
            Some(other) => {
                return Err(Error::input(format!(
                    "{}: field {field:?} is {}, expected a string",
                    at(),
                    json_kind(&other)
                )))
            }
            None => {
                let keys: Vec<String> = obj.keys().map(|k| format!("{k:?}")).collect();
                return Err(Error::input(format!(
                    "{}: no field {field:?}; the object's fields are: {}",
                    at(),
                    if keys.is_empty() {
                        "(none)".to_string()
                    } else {
                        keys.join(", ")
                    }
                )));
            }
        }
    }
    if nulls > 0 {
        tracing::warn!(
            "{}: skipped {nulls} line(s) whose field {field:?} is null",
            path.display()
        );
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn read_txt(path: &Path, out: &mut Vec<String>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "reading", e))?;
    let text = utf8(path, &bytes)?;
    out.extend(split_paragraphs(text));
    Ok(())
}

/// Documents of a plain-text file: runs of non-blank lines, separated by one or more blank
/// (empty or whitespace-only) lines. A document's text is the file's bytes from its first
/// line to the end of its last line, so line endings inside it (`\n` or `\r\n`) are kept
/// as they are.
pub fn split_paragraphs(text: &str) -> Vec<String> {
    // A byte-order mark is an encoding artefact, not text of the first document.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let line_start = pos;
        pos += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        if content.trim().is_empty() {
            if let Some(s) = start.take() {
                docs.push(text[s..end].to_string());
            }
        } else {
            start.get_or_insert(line_start);
            end = line_start + content.len();
        }
    }
    if let Some(s) = start {
        docs.push(text[s..end].to_string());
    }
    docs
}

/// `bytes` as UTF-8, or an input error naming the file, byte offset and line.
fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::input(format!(
            "{}: not valid UTF-8 at byte {offset} (line {line})",
            path.display()
        ))
    })
}
