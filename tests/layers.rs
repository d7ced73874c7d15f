//! The layers of ARCHITECTURE.md hold in the code: every module of `src/` is in
//! its table, and every `crate::…` path (and every `super::` that climbs to the
//! crate root) names a module of a lower layer, or the module itself. Provider
//! modules do not import each other.

// Tests may panic: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module → layer, from the table of ARCHITECTURE.md: rows like
/// `| 3 | `auth`, `providers` | … |`.
fn layers() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md exists");
    let mut layers = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Ok(layer) = cells[1].parse::<u32>() else {
            continue;
        };
        for module in cells[2].split(',') {
            let module = module.trim().trim_matches('`');
            assert!(!module.is_empty(), "empty module name in: {line}");
            assert!(
                layers.insert(module.to_owned(), layer).is_none(),
                "{module} is in two layers"
            );
        }
    }
    assert!(layers.len() > 5, "no layer table found in ARCHITECTURE.md");
    layers
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The module path of a file under `src/`: `providers/c1fapp/client.rs` →
/// `["providers", "c1fapp", "client"]`; a `mod.rs` is its directory.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a file without its comments (doc comments name modules freely).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::` — including
/// `use crate::{a::X, b};` — and through `super::` chains that reach the root
/// from a module `depth` levels deep.
fn referenced_modules(code: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices("crate::") {
        // `ctr_relay::crate::` cannot occur; skip identifiers ending in `crate`.
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                found.push(ident(item.trim()));
            }
        } else {
            found.push(ident(rest));
        }
    }
    // `super::super::x` from a file `depth` modules deep reaches the root after
    // `depth` steps.
    let chain = "super::".repeat(depth);
    for (at, _) in code.match_indices(&chain) {
        let rest = &code[at + chain.len()..];
        if rest.starts_with("super::") {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                found.push(ident(item.trim()));
            }
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty() && name != "self");
    found
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return index,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Every `(file, problem)` that breaks the rule.
fn violations() -> Vec<String> {
    let layers = layers();
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let path = module_path(relative);
        let Some(own) = path.first() else { continue };
        if own == "main" || own == "lib" {
            continue;
        }
        let Some(&own_layer) = layers.get(own) else {
            problems.push(format!(
                "{}: module `{own}` is not in ARCHITECTURE.md's layer table",
                relative.display()
            ));
            continue;
        };
        let text = code(&std::fs::read_to_string(file).unwrap());
        for target in referenced_modules(&text, path.len()) {
            if &target == own {
                continue;
            }
            match layers.get(&target) {
                None => problems.push(format!(
                    "{}: `crate::{target}` is not a module of the layer table",
                    relative.display()
                )),
                Some(&layer) if layer >= own_layer => problems.push(format!(
                    "{}: `{own}` (layer {own_layer}) imports `{target}` (layer {layer}): \
                     import only from lower layers",
                    relative.display()
                )),
                Some(_) => {}
            }
        }
        // Provider modules are independent of each other.
        if own == "providers" && path.len() >= 2 {
            for other in ["c1fapp", "cyberscan"] {
                if path[1] != other
                    && ["c1fapp", "cyberscan"].contains(&path[1].as_str())
                    && (text.contains(&format!("providers::{other}"))
                        || text.contains(&format!("super::{other}")))
                {
                    problems.push(format!(
                        "{}: provider `{}` imports provider `{other}`",
                        relative.display(),
                        path[1]
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_module_imports_only_from_lower_layers() {
    let problems = violations();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_library_declares_exactly_the_modules_of_the_table() {
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).unwrap();
    let mut declared: Vec<String> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_owned())
        .collect();
    declared.sort();
    let tabled: Vec<String> = layers().into_keys().collect();
    assert_eq!(declared, tabled);
}

#[test]
fn the_checker_sees_every_form_of_import() {
    let source = "use crate::{config::Settings, domain::{Secret, Observable}};\n\
                  fn f() { crate::metrics::Metrics::new(); }\n\
                  use super::super::ctim::Docs;";
    let mut found = referenced_modules(source, 2);
    found.sort();
    assert_eq!(found, vec!["config", "ctim", "domain", "metrics"]);
    assert!(referenced_modules("use super::super::x;", 3).is_empty());
    assert!(referenced_modules(&code("// crate::http"), 1).is_empty());
}
