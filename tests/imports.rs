//! The library's modules form no import cycle (the architecture issue: "src/ has no import
//! cycle"). A cycle means two modules can only be read, changed and tested together; a
//! module's children and its parent may refer to each other (that is how Rust modules
//! nest), but two modules neither of which contains the other must not depend on each
//! other, directly or through others.
//!
//! Reads every file under src/ (src/main.rs, the binary, aside) as text: comments and
//! `#[cfg(test)]` items are dropped, then every `crate::` / `super::` / `self::` path (in
//! `use` trees and in code) names the deepest module it reaches. Needs no build of the
//! crate and no adapter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`sae::gpu`; the crate root is "") of each library file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let p = entry.expect("read src/").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") || p == src.join("main.rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.insert(parts.join("::"), p);
        }
    }
    out
}

/// The text without comments, string literals' contents and `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i = text[i..].find("*/").map_or(b.len(), |e| i + e + 2);
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            // A string literal (raw strings here hold no quote): kept as "".
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i..].starts_with(b"#[cfg(test)]") {
            // Skip the item: up to its `;` or through its balanced braces.
            i += "#[cfg(test)]".len();
            while i < b.len() && b[i] != b'{' && b[i] != b';' {
                i += 1;
            }
            if i < b.len() && b[i] == b'{' {
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            i += 1;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e` (white space removed first).
fn expand(tree: &str, out: &mut Vec<String>) {
    let Some(open) = tree.find('{') else {
        out.push(tree.to_string());
        return;
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&format!("{prefix}{}", &inner[start..k]), out);
                start = k + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        expand(&format!("{prefix}{}", &inner[start..]), out);
    }
}

/// Every `crate::` / `super::` / `self::` path in `code`, `use` trees expanded.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // use trees
    let mut rest = code;
    while let Some(k) = rest.find("use ") {
        let before = rest[..k].chars().next_back();
        rest = &rest[k + 4..];
        if before.is_some_and(ident_char) {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        // `x as y` names x; then white space goes.
        let words: Vec<&str> = rest[..end].split_whitespace().collect();
        let mut tree = String::new();
        let mut k = 0;
        while k < words.len() {
            if words[k] == "as" {
                k += 2;
                continue;
            }
            tree.push_str(words[k]);
            k += 1;
        }
        expand(&tree, &mut out);
    }
    // paths in code
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if (i == 0 || !ident_char(chars[i - 1])) && ident_char(chars[i]) {
            let start = i;
            while i < chars.len() && (ident_char(chars[i]) || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let word = word.trim_end_matches(':');
            if ["crate::", "super::", "self::"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                out.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out.retain(|p| ["crate", "super", "self"].iter().any(|r| p.starts_with(r)));
    out
}

/// The deepest module `path`, written in module `from`, reaches.
fn resolve(path: &str, from: &str, mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut base: Vec<&str> = match segs.next()? {
        "crate" => Vec::new(),
        "self" => from.split("::").filter(|s| !s.is_empty()).collect(),
        "super" => {
            let mut b: Vec<&str> = from.split("::").filter(|s| !s.is_empty()).collect();
            b.pop();
            b
        }
        _ => return None,
    };
    for s in segs {
        match s {
            "super" => {
                base.pop();
            }
            "self" | "*" => {}
            s => base.push(s),
        }
    }
    (0..=base.len())
        .rev()
        .map(|k| base[..k].join("::"))
        .find(|m| mods.contains_key(m))
}

fn contains(outer: &str, inner: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"))
}

/// Edges between modules neither of which contains the other, with the paths behind them.
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn edges(mods: &BTreeMap<String, PathBuf>) -> Edges {
    let mut e = Edges::new();
    for (m, file) in mods {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let out = e.entry(m.clone()).or_default();
        for p in paths(&code_of(&text)) {
            if let Some(t) = resolve(&p, m, mods)
                && !contains(&t, m)
                && !contains(m, &t)
            {
                out.entry(t).or_default().insert(p);
            }
        }
    }
    e
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(e: &Edges) -> Vec<Vec<String>> {
    struct T<'a> {
        e: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let k = t.index.len();
        t.index.insert(v, k);
        t.low.insert(v, k);
        t.stack.push(v);
        t.on.insert(v);
        let e = t.e;
        for w in e.get(v).into_iter().flat_map(|s| s.keys()) {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        e,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in e.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// `e` seen at folder depth `k`: each module as its first `k` path segments (`sae::gpu`
/// for `sae::gpu::alloc` at 2), edges kept between groups neither of which contains the
/// other. A cycle there (sae::x -> sweep::y, sweep::z -> sae::w) is one between folders
/// even when no two files import each other.
fn collapsed(e: &Edges, k: usize) -> Edges {
    let group = |m: &str| m.split("::").take(k).collect::<Vec<_>>().join("::");
    let mut out = Edges::new();
    for (a, targets) in e {
        for (b, why) in targets {
            let (ga, gb) = (group(a), group(b));
            if !contains(&ga, &gb) && !contains(&gb, &ga) {
                let paths = out.entry(ga).or_default().entry(gb).or_default();
                paths.extend(why.iter().map(|p| format!("{a}: {p}")));
            }
        }
    }
    out
}

/// Every cycle of `e` (modules grouped at folder depth `k`), with the paths behind each
/// of its edges.
fn describe(e: &Edges, k: usize) -> Option<String> {
    let found = cycles(e);
    if found.is_empty() {
        return None;
    }
    let mut msg = format!(
        "{} import cycles (modules grouped at depth {k}):\n",
        found.len()
    );
    for comp in &found {
        msg.push_str(&format!("cycle among {comp:?}:\n"));
        for a in comp {
            for (b, why) in &e[a] {
                if comp.contains(b) {
                    msg.push_str(&format!("  {a} -> {b}: {why:?}\n"));
                }
            }
        }
    }
    Some(msg)
}

#[test]
fn src_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    assert!(
        mods.len() > 50,
        "found only {} modules under src/",
        mods.len()
    );
    let files = edges(&mods);
    let depth = mods
        .keys()
        .map(|m| m.split("::").count())
        .max()
        .unwrap_or(1);
    let found: Vec<String> = (1..depth)
        .map(|k| collapsed(&files, k))
        .chain([files.clone()])
        .enumerate()
        .filter_map(|(i, e)| describe(&e, i + 1))
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The scan itself: a made-up pair of files that import each other is a cycle, a parent
/// and its child are not, and comments, strings and test items do not count.
#[test]
fn the_scan_sees_a_cycle_and_nothing_else() {
    let mods: BTreeMap<String, PathBuf> = ["", "a", "a::x", "b", "c"]
        .iter()
        .map(|m| (m.to_string(), PathBuf::new()))
        .collect();
    let code = code_of(
        "use super::{b::Thing, a::x};\n// crate::c::f\nlet s = \"crate::c\";\n\
         #[cfg(test)]\nmod tests { use crate::c::g; }\nfn f() { crate::b::h(); }",
    );
    let found: BTreeSet<String> = paths(&code)
        .iter()
        .filter_map(|p| resolve(p, "a", &mods))
        .collect();
    assert_eq!(found, ["a::x", "b"].iter().map(|s| s.to_string()).collect());
    let mut e = Edges::new();
    let edge = |e: &mut Edges, a: &str, b: &str| {
        e.entry(a.into()).or_default().entry(b.into()).or_default();
    };
    edge(&mut e, "a", "b");
    edge(&mut e, "c", "a");
    assert!(cycles(&e).is_empty());
    edge(&mut e, "b", "c");
    assert_eq!(cycles(&e), vec![vec!["a", "b", "c"]]);
    // No two files import each other, but folder a and folder b do.
    let mut e = Edges::new();
    edge(&mut e, "a::x", "b::y");
    edge(&mut e, "b::z", "a::w");
    assert!(cycles(&e).is_empty());
    assert_eq!(cycles(&collapsed(&e, 1)), vec![vec!["a", "b"]]);
}
