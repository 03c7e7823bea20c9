//! The compiler never panics: feed it the real compat tree mutated at random
//! (lines deleted, swapped or duplicated, text truncated, garbage inserted,
//! values replaced).

mod common;

use codegen::SourceFile;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    SwapLines(usize, usize),
    DuplicateLine(usize),
    Truncate(usize),
    Insert(usize, String),
    ReplaceQuoted(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let garbage = prop_oneof![
        Just("[[device]]\nname = \"x\"\nparent = \"x\"\n".to_string()),
        Just("\"".to_string()),
        Just("]]".to_string()),
        Just("= = =".to_string()),
        Just("\u{feff}é\u{0}".to_string()),
        Just("[[delta]]\nseries = \"hw_compat\"\nversion = \"99999.1\"\n".to_string()),
        "[ -~]{0,12}",
    ];
    let value = prop_oneof![
        Just("".to_string()),
        Just("device".to_string()),
        Just("0".to_string()),
        Just("auto".to_string()),
        Just("field:status".to_string()),
        Just("8.2".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        "[a-z0-9._:-]{0,10}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), garbage).prop_map(|(a, g)| Mutation::Insert(a, g)),
        (any::<usize>(), value).prop_map(|(a, v)| Mutation::ReplaceQuoted(a, v)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(i % n);
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Mutation::Truncate(i) => {
            let mut cut = i % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_string();
        }
        Mutation::Insert(i, g) => lines.insert(i % (lines.len() + 1), g.clone()),
        Mutation::ReplaceQuoted(i, v) => {
            let quoted: Vec<(usize, usize, usize)> = lines
                .iter()
                .enumerate()
                .flat_map(|(li, l)| {
                    let idx: Vec<usize> = l.match_indices('"').map(|(k, _)| k).collect();
                    idx.chunks(2)
                        .filter(|c| c.len() == 2)
                        .map(move |c| (li, c[0], c[1]))
                        .collect::<Vec<_>>()
                })
                .collect();
            if let Some(&(li, a, b)) = quoted.get(i % quoted.len().max(1)) {
                lines[li] = format!("{}\"{v}\"{}", &lines[li][..a], &lines[li][b + 1..]);
            }
        }
        _ => {}
    }
    lines.join("\n")
}

fn real_sources() -> Vec<SourceFile> {
    common::read(&common::repo().join("compat"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compile_never_panics(file in any::<usize>(), muts in proptest::collection::vec(mutation(), 1..4)) {
        let mut sources = real_sources();
        let k = file % sources.len();
        for m in &muts {
            sources[k].text = apply(&sources[k].text, m);
        }
        let rendered = match codegen::compile(sources) {
            Ok(c) => codegen::render_plain(&c.warnings, &c.sources),
            Err(f) => f.render(),
        };
        let _ = rendered;
    }
}

#[test]
fn empty_and_binary_inputs() {
    for text in [
        "",
        "\0\0\0",
        "[[family]]",
        "x = 1",
        "[[device]]\nname = \"a\"\nparent = \"a\"\n",
    ] {
        let s = vec![SourceFile {
            name: "x.toml".into(),
            text: text.into(),
        }];
        let _ = codegen::compile(s);
    }
}
