//! The code map in ARCHITECTURE.md is true: every module of `compiler/` stands in exactly one
//! layer there, and imports only modules of lower layers (so there is no import cycle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layer table between the markers in ARCHITECTURE.md: `N  module, module` per line.
fn layers() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let block = text.split("<!-- layers:begin -->").nth(1).and_then(|t| t.split("<!-- layers:end -->").next()).expect("ARCHITECTURE.md has the layer table");
    let mut map = BTreeMap::new();
    for line in block.lines() {
        let line = line.trim();
        let Some((n, mods)) = line.split_once(char::is_whitespace) else { continue };
        let Ok(n) = n.parse::<usize>() else { continue };
        let mods = mods.split('—').next().unwrap();
        for m in mods.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            assert!(map.insert(m.to_string(), n).is_none(), "{m} is in two layers");
        }
    }
    map
}

/// Source text without line and doc comments (a line is cut at its first `//`; no `crate::`
/// path follows a string holding `//` on the same line in this code).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// The first path segments after `crate::` in `text`, `use crate::{a, b::{c}}` included.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            // Top-level items of a balanced brace group.
            let (mut depth, mut item) = (0, String::new());
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(item.trim().split("::").next().unwrap().to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            out.insert(item.trim().split("::").next().unwrap().to_string());
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out.retain(|s| !s.is_empty() && s != "self");
    out
}

#[test]
fn crate_refs_reads_nested_use_groups() {
    let refs = crate_refs("use crate::{fleet::{self, Fleet}, model};\nlet x = crate::cost::f(); // crate::ssh\n");
    assert_eq!(refs, ["cost", "fleet", "model", "ssh"].map(String::from).into());
}

#[test]
fn every_module_imports_only_modules_of_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("compiler");
    let layers = layers();
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let modules: BTreeSet<String> = lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';').to_string()).collect();
    let listed: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(modules, listed, "the modules of compiler/lib.rs and those of ARCHITECTURE.md's layer table differ");
    let mut violations = Vec::new();
    for m in &modules {
        // A module is its file, or its folder with every file in it.
        let files: Vec<std::path::PathBuf> = if root.join(m).is_dir() {
            std::fs::read_dir(root.join(m)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rs")).collect()
        } else {
            vec![root.join(format!("{m}.rs"))]
        };
        assert!(!files.is_empty(), "module {m} has no source");
        for f in files {
            let refs = crate_refs(&code(&std::fs::read_to_string(&f).unwrap()));
            for r in refs.iter().filter(|r| modules.contains(*r) && *r != m) {
                if layers[r] >= layers[m] {
                    violations.push(format!("{} (layer {}) imports {r} (layer {})", f.strip_prefix(&root).unwrap().display(), layers[m], layers[r]));
                }
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layers of ARCHITECTURE.md:\n{}", violations.join("\n"));
}
