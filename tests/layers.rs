//! The library's layers, read from its sources: a top-level module may use
//! only modules below it (ARCHITECTURE.md, "Layers"), so no two import each
//! other, and nothing in the library uses the shell (`src/cmd/`, in the
//! binary) or anyhow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Higher uses lower, never the other way, nor the same rank.
const RANKS: &[(&str, u8)] = &[
    ("tui", 7),
    ("doctor", 6),
    ("export", 6),
    ("monitor", 5),
    ("deploy", 4),
    ("proxy", 3),
    ("sim", 3),
    ("tls", 2),
    ("net", 1),
    ("config", 1),
    ("fsutil", 1),
    ("http2", 1),
    ("websocket", 0),
    ("field", 0),
    ("template", 0),
    ("serve", 0),
    ("clock", 0),
    ("histogram", 0),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules each module's files name as `crate::<module>`.
fn uses() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (module, _) in RANKS {
        let dir = src.join(module);
        let mut files = Vec::new();
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{module}.rs")));
        }
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("crate::") {
                let used: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used != *module {
                    out.entry(module.to_string()).or_default().insert(used, file.clone());
                }
            }
        }
    }
    out
}

#[test]
fn modules_use_only_modules_below_them() {
    let rank: BTreeMap<&str, u8> = RANKS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, used) in uses() {
        for (other, file) in used {
            match rank.get(other.as_str()) {
                Some(r) if *r < rank[module.as_str()] => {}
                Some(_) => wrong.push(format!("{module} uses {other} ({})", file.display())),
                None => wrong.push(format!(
                    "{module} uses crate::{other}, which is not a known layer ({}); add it to RANKS and ARCHITECTURE.md",
                    file.display()
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let name = line.trim_end_matches(';');
        assert!(
            RANKS.iter().any(|(m, _)| *m == name),
            "src/lib.rs declares {name}, which has no layer in tests/layers.rs"
        );
    }
}

#[test]
fn the_library_uses_neither_the_shell_nor_anyhow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let shell = file.starts_with(src.join("cmd")) || file == src.join("main.rs");
        if shell {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for word in ["anyhow", "crate::cmd", "clap::Parser", "clap::Args", "clap::Subcommand"] {
            assert!(!text.contains(word), "{} uses {word}", file.display());
        }
    }
}
