//! The documentation holds together: every relative link of README.md and
//! docs/ leads to a file (and a heading) that exists, the README stays short,
//! and the configuration table names exactly the variables the relay reads.

#![allow(clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    let docs = std::fs::read_dir(Path::new(ROOT).join("docs")).expect("docs/");
    for entry in docs {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The targets of `[text](target)` links, outside code blocks and spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            match after.find(')') {
                Some(end) => {
                    found.push(after[..end].to_owned());
                    rest = &after[end..];
                }
                None => break,
            }
        }
    }
    found
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| {
            line.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

fn is_external(target: &str) -> bool {
    target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:")
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        for target in links(&text) {
            if is_external(&target) {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let dir = page.parent().expect("a page has a directory");
            let resolved = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            assert!(
                resolved.exists(),
                "{}: the link {target} leads nowhere",
                page.display()
            );
            if let Some(anchor) = anchor {
                let headings = anchors(&read(&resolved));
                assert!(
                    headings.contains(anchor),
                    "{}: {target}: no heading with that anchor in {}",
                    page.display(),
                    resolved.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} relative links found");
}

#[test]
fn the_readme_stays_short_and_maps_every_page() {
    let readme = read(&Path::new(ROOT).join("README.md"));
    assert!(
        readme.len() <= 15_000,
        "README.md is {} bytes; reference material belongs in docs/",
        readme.len()
    );
    for page in pages().iter().skip(1) {
        let name = page.file_name().and_then(|n| n.to_str()).expect("a name");
        if name == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&format!("(docs/{name})")),
            "README.md does not link docs/{name}"
        );
    }
}

#[test]
fn the_configuration_table_names_every_variable_and_no_other() {
    let page = read(&Path::new(ROOT).join("docs/configuration.md"));
    let mut listed = BTreeSet::new();
    for line in page.lines() {
        let Some(first) = line.strip_prefix("| `") else {
            continue;
        };
        let cell = first.split(" |").next().expect("a cell");
        for name in cell.split(", ") {
            listed.insert(name.trim_matches('`').to_owned());
        }
    }
    let read_by_relay: BTreeSet<String> = ctr_relay::config::VARIABLES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    assert_eq!(listed, read_by_relay);
}
