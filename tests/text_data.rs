//! Text data sources and tokenization into fixed-length contexts (`saerun::data::text`).
//!
//! Most tests build their own files and tokenizers in a tempdir so they run everywhere;
//! the last ones use the real Pythia tokenizer and tinyshakespeare from
//! `$SAERUN_SHARED_DIR/data` and skip (with a message) when that variable is unset.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use saerun::data::text::{
    self, encode_prefixes, load_documents, split_documents, tokenize, ContextParams, Packing,
    TokenizedContexts,
};
use saerun::model::tokenizer::Tokenizer;
use saerun::Error;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::AddedToken;

// ---------------------------------------------------------------- helpers

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn write_parquet(dir: &Path, name: &str, df: &mut DataFrame) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(file).finish(df).unwrap();
    path
}

/// The message of an `Error::Input`; fails the test for any other outcome.
fn input_err<T: std::fmt::Debug>(r: saerun::Result<T>) -> String {
    match r {
        Err(Error::Input(msg)) => msg,
        other => panic!("expected Error::Input, got {other:?}"),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not mention {p:?}");
    }
}

/// A word-level tokenizer (split on whitespace) over `words`; `<|endoftext|>` (id 0) as a
/// special token when `eos`. Unknown words map to `[UNK]`.
fn word_tokenizer(dir: &Path, words: &[String], eos: bool) -> Tokenizer {
    let mut vocab: Vocab = Default::default();
    let mut next = 0u32;
    let mut add = |w: &str, vocab: &mut Vocab| {
        if !vocab.contains_key(w) {
            vocab.insert(w.to_string(), next);
            next += 1;
        }
    };
    if eos {
        add("<|endoftext|>", &mut vocab);
    }
    add("[UNK]", &mut vocab);
    for w in words {
        add(w, &mut vocab);
    }
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(Whitespace));
    if eos {
        tk.add_special_tokens([AddedToken::from("<|endoftext|>", true)])
            .unwrap();
    }
    let path = dir.join(if eos { "word_eos.json" } else { "word.json" });
    tk.save(&path, false).unwrap();
    Tokenizer::from_file(&path).unwrap()
}

/// A small GPT-2-style tokenizer: byte-level pre-tokenizer (GPT-2 regex), BPE over the 256
/// byte symbols with merges for frequent pieces (words, runs of spaces and dashes), an
/// `<|endoftext|>` special token and, like Pythia, non-special added tokens for runs of
/// spaces. Enough to make a cut text tokenize differently from the full one at the cut.
fn bpe_tokenizer(dir: &Path) -> Tokenizer {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let mut vocab: Vocab = Default::default();
    vocab.insert("<|endoftext|>".into(), 0);
    for c in alphabet {
        let id = vocab.len() as u32;
        vocab.insert(c.to_string(), id);
    }
    // Each merge joins two existing symbols; the merged symbol is added to the vocab.
    let pieces = [
        ("Ġ", "t"),
        ("Ġt", "h"),
        ("Ġth", "e"),
        ("e", "r"),
        ("i", "n"),
        ("in", "g"),
        ("Ġ", "a"),
        ("Ġa", "n"),
        ("Ġan", "d"),
        ("o", "n"),
        ("Ġ", "s"),
        ("Ġ", "Ġ"),
        ("ĠĠ", "ĠĠ"),
        ("ĠĠĠĠ", "ĠĠĠĠ"),
        ("-", "-"),
        ("--", "--"),
        ("----", "----"),
        ("--------", "--------"),
        ("----------------", "----------------"),
        ("Ã", "©"),
        ("a", "b"),
        ("ab", "c"),
        ("abc", "d"),
        ("Ċ", "Ċ"),
    ];
    let mut merges = Vec::new();
    for (a, b) in pieces {
        let joined = format!("{a}{b}");
        let id = vocab.len() as u32;
        vocab.entry(joined).or_insert(id);
        merges.push((a.to_string(), b.to_string()));
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .unwrap();
    let mut tk = tokenizers::Tokenizer::new(model);
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tk.add_special_tokens([AddedToken::from("<|endoftext|>", true)])
        .unwrap();
    tk.add_tokens([
        AddedToken::from(" ".repeat(8), false).normalized(true),
        AddedToken::from(" ".repeat(3), false).normalized(true),
    ])
    .unwrap();
    let path = dir.join("bpe.json");
    tk.save(&path, false).unwrap();
    Tokenizer::from_file(&path).unwrap()
}

/// Documents `d{i} w w w …` with `len(i)` words in all; every first word is unique, so a
/// context's first token identifies its document.
fn numbered_docs(n: usize, len: impl Fn(usize) -> usize) -> (Vec<String>, Vec<String>) {
    let docs: Vec<String> = (0..n)
        .map(|i| {
            let mut words = vec![format!("d{i}")];
            words.extend((1..len(i)).map(|k| format!("w{}", k % 7)));
            words.join(" ")
        })
        .collect();
    let mut vocab: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    vocab.extend((0..7).map(|k| format!("w{k}")));
    (docs, vocab)
}

fn params(context_tokens: usize, packing: Packing) -> ContextParams {
    ContextParams {
        context_tokens,
        packing,
        prepend_bos: false,
        eval_fraction: 0.2,
        max_documents: None,
        seed: 7,
    }
}

fn rows(flat: &[u32], width: usize) -> Vec<Vec<u32>> {
    flat.chunks(width).map(<[u32]>::to_vec).collect()
}

// ---------------------------------------------------------------- documents

#[test]
fn txt_documents_are_separated_by_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.txt",
        "\u{feff}First line\nsecond line\n\n\n   \t\nThird, alone\r\n\r\n\nlast\r\nline",
    );
    let b = write(dir.path(), "b.TXT", "one document\nwithout blank lines\n");
    let docs = load_documents(&[a, b], "ignored").unwrap();
    assert_eq!(
        docs,
        [
            "First line\nsecond line",
            "Third, alone",
            "last\r\nline",
            "one document\nwithout blank lines",
        ]
    );
}

#[test]
fn jsonl_documents_use_the_named_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "d.jsonl",
        "{\"content\": \"alpha\", \"meta\": 1}\n\n{\"content\": \"beta\\ngamma\"}\r\n\
         {\"content\": null}\n{\"content\": \"\"}\n",
    );
    let docs = load_documents(&[f], "content").unwrap();
    // Blank lines and nulls are skipped; an empty string is a (short) document.
    assert_eq!(docs, ["alpha", "beta\ngamma", ""]);
}

#[test]
fn parquet_documents_and_several_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut df = df!(
        "id" => [1u64, 2, 3],
        "text" => [Some("first doc"), None, Some("third doc")],
    )
    .unwrap();
    let p = write_parquet(dir.path(), "part-0.parquet", &mut df);
    let t = write(dir.path(), "more.txt", "from text");
    let docs = load_documents(&[p.clone(), t], "text").unwrap();
    assert_eq!(docs, ["first doc", "third doc", "from text"]);
    let docs = load_documents(&[p], "text").unwrap();
    assert_eq!(docs.len(), 2);
}

#[test]
fn first_documents_stop_reading_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.txt", "one\n\ntwo\n\nthree");
    // Never opened when the limit is reached in `a.txt`: it would be an error.
    let bad = write(dir.path(), "b.parquet", "this is not parquet");
    let files = [a, bad];
    let docs = text::load_first_documents(&files, "text", Some(2)).unwrap();
    assert_eq!(docs, ["one", "two"]);
    let docs = text::load_first_documents(&files, "text", Some(3)).unwrap();
    assert_eq!(docs, ["one", "two", "three"]);
    // One more than the first file holds: the second file is read, and fails.
    let msg = input_err(text::load_first_documents(&files, "text", Some(4)));
    assert_mentions(&msg, &["b.parquet"]);
    let msg = input_err(text::load_first_documents(&files, "text", None));
    assert_mentions(&msg, &["b.parquet"]);
}

#[test]
fn parquet_missing_or_non_string_column_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut df = df!("id" => [1u64, 2], "body" => ["a", "b"]).unwrap();
    let p = write_parquet(dir.path(), "x.parquet", &mut df);
    let msg = input_err(load_documents(std::slice::from_ref(&p), "text"));
    assert_mentions(&msg, &["x.parquet", "\"text\"", "\"id\"", "\"body\""]);
    let msg = input_err(load_documents(&[p], "id"));
    assert_mentions(&msg, &["x.parquet", "\"id\"", "expected strings"]);
}

#[test]
fn parquet_without_rows_or_unreadable_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut df = df!("text" => Vec::<String>::new()).unwrap();
    let p = write_parquet(dir.path(), "empty.parquet", &mut df);
    let msg = input_err(load_documents(&[p], "text"));
    assert_mentions(&msg, &["empty.parquet", "no documents"]);
    let bad = write(dir.path(), "bad.parquet", "this is not parquet");
    let msg = input_err(load_documents(&[bad], "text"));
    assert_mentions(&msg, &["bad.parquet"]);
}

#[test]
fn jsonl_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"text\": \"ok\"}\n\n{\"text\": oops}\n",
            ":3",
            "not valid JSON at column 10",
        ),
        (
            "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n",
            ":2",
            "no field \"text\"; the object's fields are: \"body\"",
        ),
        ("{\"text\": 5}\n", ":1", "\"text\" is a number"),
        ("{\"text\": \"ok\"}\n[\"text\"]\n", ":2", "JSON object"),
    ];
    for (i, (content, line, what)) in cases.into_iter().enumerate() {
        let name = format!("case{i}.jsonl");
        let f = write(dir.path(), &name, content);
        let msg = input_err(load_documents(&[f], "text"));
        assert_mentions(&msg, &[&format!("{name}{line}:"), what]);
    }
}

#[test]
fn empty_files_are_input_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("empty.txt", ""),
        ("blank.txt", "\n \n\t\n"),
        ("empty.jsonl", ""),
        ("nulls.jsonl", "{\"text\": null}\n"),
    ] {
        let f = write(dir.path(), name, content);
        let msg = input_err(load_documents(&[f], "text"));
        assert_mentions(&msg, &[name, "no documents"]);
    }
    input_err(load_documents(&[], "text"));
}

#[test]
fn invalid_utf8_is_an_input_error_with_offset_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "latin1.txt",
        b"good\nline two \xe9t\xe9\n".as_slice(),
    );
    let msg = input_err(load_documents(&[f], "text"));
    assert_mentions(&msg, &["latin1.txt", "UTF-8", "byte 14", "line 2"]);
    let f = write(
        dir.path(),
        "bad.jsonl",
        b"{\"text\": \"\xff\"}\n".as_slice(),
    );
    let msg = input_err(load_documents(&[f], "text"));
    assert_mentions(&msg, &["bad.jsonl", "UTF-8", "line 1"]);
}

#[test]
fn unknown_extension_lists_the_accepted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "data.csv", "text\nhello\n");
    let msg = input_err(load_documents(&[f], "text"));
    assert_mentions(&msg, &["data.csv", ".parquet", ".jsonl", ".txt"]);
}

// ---------------------------------------------------------------- split

#[test]
fn split_is_disjoint_complete_and_deterministic() {
    for n in [2usize, 3, 10, 1000] {
        for frac in [0.0, 0.1, 0.5, 0.99] {
            let s = split_documents(n, frac, 3);
            assert_eq!(s, split_documents(n, frac, 3));
            let train: HashSet<_> = s.train.iter().copied().collect();
            assert!(s.eval.iter().all(|i| !train.contains(i)));
            let mut all: Vec<_> = s.train.iter().chain(&s.eval).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            assert!(
                !s.eval.is_empty() && !s.train.is_empty(),
                "n={n} frac={frac}"
            );
            assert!(s.train.windows(2).all(|w| w[0] < w[1]));
        }
    }
    let s = split_documents(1000, 0.1, 3);
    assert_eq!(s.eval.len(), 100);
    assert_ne!(s, split_documents(1000, 0.1, 4));
    assert_eq!(split_documents(1, 0.5, 0).eval.len(), 0);
}

// ---------------------------------------------------------------- tokenize

#[test]
fn truncate_takes_each_documents_first_context_and_drops_short_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Lengths 3, 4, 5, ... so documents 0 and 1 are shorter than a 5-token context.
    let (docs, vocab) = numbered_docs(40, |i| i + 3);
    let tk = word_tokenizer(dir.path(), &vocab, true);
    let p = params(5, Packing::Truncate);
    let c = tokenize(&docs, &tk, &p, "test-docs").unwrap();
    assert_eq!(c.context_tokens, 5);
    assert_eq!(c.n_train_documents + c.n_eval_documents, 40);
    assert_eq!(c.n_eval_documents, 8);
    assert_eq!(
        c.n_train() + c.n_eval(),
        38,
        "the two short documents are dropped"
    );
    let split = split_documents(40, 0.2, 7);
    let long: Vec<usize> = split.train.iter().copied().filter(|&i| i >= 2).collect();
    for (row, &doc) in rows(&c.train, 5).iter().zip(&long) {
        assert_eq!(row, &tk.encode(&docs[doc]).unwrap()[..5]);
    }
    // Each context's first token names its document: train and eval never share one.
    let firsts = |flat: &[u32]| -> HashSet<u32> { flat.chunks(5).map(|r| r[0]).collect() };
    let (tr, ev) = (firsts(&c.train), firsts(&c.eval));
    assert_eq!(tr.len(), c.n_train());
    assert!(tr.is_disjoint(&ev));
    // Deterministic for a seed; another seed moves documents between the sides.
    assert_eq!(c, tokenize(&docs, &tk, &p, "test-docs").unwrap());
    let other = tokenize(&docs, &tk, &ContextParams { seed: 8, ..p }, "test-docs").unwrap();
    assert_ne!(firsts(&other.eval), ev);
}

#[test]
fn pack_concatenates_documents_with_eos_and_cuts_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, vocab) = numbered_docs(30, |i| 1 + i % 4);
    for eos in [true, false] {
        let tk = word_tokenizer(dir.path(), &vocab, eos);
        let p = params(4, Packing::Pack);
        let c = tokenize(&docs, &tk, &p, "test-docs").unwrap();
        let split = split_documents(30, 0.2, 7);
        let stream = |idx: &[usize]| -> Vec<u32> {
            let mut s = Vec::new();
            for (k, &i) in idx.iter().enumerate() {
                if eos && k > 0 {
                    s.push(0);
                }
                s.extend(tk.encode(&docs[i]).unwrap());
            }
            s
        };
        for (got, idx) in [(&c.train, &split.train), (&c.eval, &split.eval)] {
            let s = stream(idx);
            assert_eq!(
                got.len(),
                s.len() / 4 * 4,
                "incomplete last context dropped"
            );
            assert_eq!(got[..], s[..got.len()]);
        }
        assert_eq!(c.n_train_documents, split.train.len());
        assert_eq!(c.n_eval_documents, split.eval.len());
    }
}

#[test]
fn truncate_and_pack_differ_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, vocab) = numbered_docs(20, |_| 10);
    let tk = word_tokenizer(dir.path(), &vocab, true);
    let t = tokenize(&docs, &tk, &params(4, Packing::Truncate), "x").unwrap();
    let p = tokenize(&docs, &tk, &params(4, Packing::Pack), "x").unwrap();
    assert_eq!(t.n_train(), 16, "one context per train document");
    // 16 documents × 10 tokens + 15 separators = 175 tokens → 43 contexts.
    assert_eq!(p.n_train(), 43);
}

#[test]
fn prepend_bos_puts_the_end_of_text_id_first() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, vocab) = numbered_docs(10, |_| 8);
    let tk = word_tokenizer(dir.path(), &vocab, true);
    let p = ContextParams {
        prepend_bos: true,
        ..params(5, Packing::Truncate)
    };
    let c = tokenize(&docs, &tk, &p, "x").unwrap();
    let split = split_documents(10, 0.2, 7);
    for (row, &doc) in rows(&c.train, 5).iter().zip(&split.train) {
        assert_eq!(row[0], 0);
        assert_eq!(row[1..], tk.encode(&docs[doc]).unwrap()[..4]);
    }
    let packed = tokenize(
        &docs,
        &tk,
        &ContextParams {
            packing: Packing::Pack,
            ..p.clone()
        },
        "x",
    )
    .unwrap();
    assert!(packed.train.chunks(5).all(|r| r[0] == 0));
    // 8 train documents × 8 tokens + 7 separators = 71 → 17 contexts of 4 + BOS.
    assert_eq!(packed.n_train(), 17);

    let no_eos = word_tokenizer(dir.path(), &vocab, false);
    let msg = input_err(tokenize(&docs, &no_eos, &p, "my-source"));
    assert_mentions(&msg, &["my-source", "BOS"]);
    let msg = input_err(tokenize(
        &docs,
        &tk,
        &ContextParams {
            context_tokens: 1,
            ..p
        },
        "my-source",
    ));
    assert_mentions(&msg, &["context_tokens", "at least 2"]);
}

#[test]
fn too_short_documents_are_input_errors_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, vocab) = numbered_docs(12, |i| 2 + i % 5); // longest: 6 tokens
    let tk = word_tokenizer(dir.path(), &vocab, true);
    let msg = input_err(tokenize(
        &docs,
        &tk,
        &params(25, Packing::Truncate),
        "src-a",
    ));
    assert_mentions(&msg, &["src-a", "train documents", "6 tokens", "25 tokens"]);
    let msg = input_err(tokenize(&docs, &tk, &params(200, Packing::Pack), "src-b"));
    assert_mentions(&msg, &["src-b", "documents", "200 tokens"]);

    // Long documents all land in train, short ones in eval: the eval split is empty.
    let split = split_documents(12, 0.2, 7);
    let mixed: Vec<String> = (0..12)
        .map(|i| {
            let n = if split.eval.contains(&i) { 2 } else { 9 };
            let mut w = vec![format!("d{i}")];
            w.extend((1..n).map(|_| "w1".to_string()));
            w.join(" ")
        })
        .collect();
    let msg = input_err(tokenize(
        &mixed,
        &tk,
        &params(5, Packing::Truncate),
        "src-c",
    ));
    assert_mentions(&msg, &["src-c", "eval documents", "2 tokens", "5 tokens"]);

    let msg = input_err(tokenize(
        &docs[..1],
        &tk,
        &params(2, Packing::Truncate),
        "one",
    ));
    assert_mentions(&msg, &["one", "1 document"]);
    let msg = input_err(tokenize(
        &docs,
        &tk,
        &ContextParams {
            eval_fraction: 1.0,
            ..params(2, Packing::Truncate)
        },
        "x",
    ));
    assert_mentions(&msg, &["eval_fraction"]);
}

#[test]
fn max_documents_caps_before_splitting() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, vocab) = numbered_docs(50, |_| 6);
    let tk = word_tokenizer(dir.path(), &vocab, true);
    let p = ContextParams {
        max_documents: Some(10),
        ..params(3, Packing::Truncate)
    };
    let c = tokenize(&docs, &tk, &p, "x").unwrap();
    assert_eq!(c.n_train_documents + c.n_eval_documents, 10);
    assert_eq!(c.n_eval_documents, 2);
    let allowed: HashSet<u32> = docs[..10]
        .iter()
        .map(|d| tk.encode(d).unwrap()[0])
        .collect();
    let firsts: HashSet<u32> = c
        .train
        .chunks(3)
        .chain(c.eval.chunks(3))
        .map(|r| r[0])
        .collect();
    assert_eq!(firsts, allowed);
}

// ---------------------------------------------------------------- prefix encoding

/// Texts where cutting in the wrong place changes tokens: long words, runs of spaces (the
/// GPT-2 regex's look-ahead and added whitespace tokens), dashes, multi-byte characters,
/// special tokens inside the text, no whitespace at all.
fn tricky_texts() -> Vec<String> {
    let mut out = Vec::new();
    let unit = [
        "the and thing abcd ",
        "        ",
        "  x",
        "-----------------",
        "éé€😀 ",
        "\n\n",
        "<|endoftext|>",
        "abcdabcdabcd",
        "   \t ",
        "ingthe",
    ];
    for start in 0..unit.len() {
        let mut s = String::new();
        let mut k = start;
        while s.len() < 6000 {
            s.push_str(unit[k % unit.len()]);
            k = k * 7 + 3;
        }
        out.push(s);
    }
    // One long pre-token of single-token 32-byte pieces: the budget of the first cut (256
    // bytes for up to 16 tokens) ends inside it, where the cut text's last tokens differ
    // from the full text's.
    for k in 240..300 {
        for start in ["x", "ab ", "é"] {
            out.push(format!("{start}{} tail", "-".repeat(k)));
        }
    }
    out.push("x".repeat(5000));
    out.push(" ".repeat(5000) + "end");
    out.push("é".repeat(3000));
    out.push("a short text".into());
    out
}

#[test]
fn prefix_encoding_matches_full_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let texts = tricky_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for tk in [bpe_tokenizer(dir.path()), {
        let words: Vec<String> = ["the", "and", "x", "end"].map(String::from).to_vec();
        word_tokenizer(dir.path(), &words, true)
    }] {
        let full: Vec<Vec<u32>> = refs.iter().map(|t| tk.encode(t).unwrap()).collect();
        for n in (1..=40).chain([100, 333, 1000]) {
            let got = encode_prefixes(&refs, &tk, n).unwrap();
            for (i, (g, f)) in got.iter().zip(&full).enumerate() {
                assert_eq!(g[..], f[..n.min(f.len())], "text {i}, n = {n}");
            }
        }
    }
}

// ---------------------------------------------------------------- storage

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = TokenizedContexts {
        context_tokens: 3,
        train: vec![0, 1, 2, 50_000, 4_000_000_000, 5],
        eval: vec![7, 8, 9],
        n_train_documents: 4,
        n_eval_documents: 1,
    };
    let out = dir.path().join("entry");
    text::save(&c, &out).unwrap();
    assert!(out.join(text::TOKENS_FILE).is_file());
    assert_eq!(text::load(&out).unwrap(), c);
    assert!(text::load(dir.path()).is_err());
}

// ---------------------------------------------------------------- shared data

fn shared_dir() -> Option<PathBuf> {
    match std::env::var_os("SAERUN_SHARED_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("skipping: SAERUN_SHARED_DIR is not set (needs data/tinyshakespeare.txt)");
            None
        }
    }
}

#[test]
fn tinyshakespeare_with_the_pythia_tokenizer() {
    let Some(shared) = shared_dir() else { return };
    let data = shared.join("data");
    let tk = Tokenizer::from_file(&data.join("tiny-pythia/tokenizer.json")).unwrap();
    let file = data.join("tinyshakespeare.txt");
    let docs = load_documents(std::slice::from_ref(&file), "text").unwrap();
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(docs.len() > 1000, "{} documents", docs.len());

    // The text-cut shortcut gives the same tokens as encoding whole documents, for
    // paragraphs and for long stretches of the file.
    let mut texts: Vec<&str> = docs.iter().map(String::as_str).collect();
    let chunks: Vec<&str> = (0..40)
        .map(|k| {
            let start = (k * 27_361) % (raw.len() - 20_000);
            let start = (start..).find(|&i| raw.is_char_boundary(i)).unwrap();
            let end = (start + 20_000..)
                .find(|&i| raw.is_char_boundary(i))
                .unwrap();
            &raw[start..end]
        })
        .collect();
    texts.extend(&chunks);
    let full: Vec<Vec<u32>> = texts.iter().map(|t| tk.encode(t).unwrap()).collect();
    for n in [24, 25, 256] {
        let got = encode_prefixes(&texts, &tk, n).unwrap();
        for (g, f) in got.iter().zip(&full) {
            assert_eq!(g[..], f[..n.min(f.len())]);
        }
    }

    for packing in [Packing::Truncate, Packing::Pack] {
        for prepend_bos in [false, true] {
            // A seed whose split keeps document 0 (the file's start) in train.
            let seed = (0..)
                .find(|&s| split_documents(docs.len(), 0.1, s).train[0] == 0)
                .unwrap();
            let p = ContextParams {
                context_tokens: 25,
                packing,
                prepend_bos,
                eval_fraction: 0.1,
                max_documents: None,
                seed,
            };
            let c = tokenize(&docs, &tk, &p, "tinyshakespeare").unwrap();
            eprintln!(
                "{packing:?} bos={prepend_bos}: {} train / {} eval contexts",
                c.n_train(),
                c.n_eval()
            );
            assert!(c.n_train() > 1000, "{packing:?}: {} contexts", c.n_train());
            assert!(c.n_eval() > 0);
            let first = c.train_context(0);
            let body = if prepend_bos {
                assert_eq!(first[0], 0, "<|endoftext|> is id 0");
                &first[1..]
            } else {
                first
            };
            // Pack: the file's start, its blank lines replaced by the document separator.
            // Truncate: the start of the first train document long enough for a context
            // (the file's first speech is shorter than that).
            let train = split_documents(docs.len(), 0.1, seed).train;
            let expected = match packing {
                Packing::Pack => train[..20]
                    .iter()
                    .map(|&i| docs[i].as_str())
                    .collect::<Vec<_>>()
                    .join("<|endoftext|>"),
                Packing::Truncate => train
                    .iter()
                    .map(|&i| docs[i].clone())
                    .find(|d| tk.encode(d).unwrap().len() >= body.len())
                    .unwrap(),
            };
            let decoded = tk.decode(body).unwrap();
            assert!(
                expected.starts_with(&decoded) && decoded.len() > 40,
                "{decoded:?} is not the start of {expected:?}"
            );
            if packing == Packing::Pack {
                assert!(raw.starts_with(&decoded.replace("<|endoftext|>", "\n\n")[..60]));
            }
        }
    }
}
