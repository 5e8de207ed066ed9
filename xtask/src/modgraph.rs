//! The module graph of a Rust crate, read from its source, and its cycles:
//! `cargo xtask cycles` for every crate of the workspace, and a test that
//! the xtask's own graph has none.
//!
//! A module names another through a path: `crate::a::b`, `super::x`,
//! `self::y`, a child module's name (`child::item`), and `use` trees with
//! groups (`use crate::{a, b::{c, d}}`). Each path leads to the deepest
//! module it names (an item's path `crate::a::f` to `a`); that module is
//! an edge of the graph. `mod x;` alone is a declaration, not an edge.
//! Inline modules (`mod tests { ... }`) belong to their file's module.
//! Comments and literals are skipped; `#[path]` attributes and macros
//! that build paths are not followed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A module: its path below the crate root (`[]` is the root).
pub type Module = Vec<String>;

/// The graph: for every module, the modules it names.
#[derive(Debug, Default)]
pub struct Graph {
    pub edges: BTreeMap<Module, BTreeSet<Module>>,
}

/// `a::b`, or `crate` for the root.
pub fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Reads the crate whose root file is `root` (`src/main.rs`, `src/lib.rs`).
pub fn read_crate(root: &Path) -> Result<Graph> {
    read_with(root, &|p: &Path| std::fs::read_to_string(p).ok())
}

/// [`read_crate`] with the files read through `read` (tests).
pub fn read_with(root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Result<Graph> {
    // The file modules and their children, from the `mod x;` declarations.
    let mut files: BTreeMap<Module, String> = BTreeMap::new();
    let mut todo: Vec<(Module, PathBuf)> = vec![(Vec::new(), root.to_path_buf())];
    while let Some((m, file)) = todo.pop() {
        let text = read(&file).with_context(|| format!("reading {}", file.display()))?;
        let code = strip(&text);
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let dir = if m.is_empty() || stem == "mod" {
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            file.with_extension("")
        };
        for child in declared_modules(&code) {
            let (flat, nested) = (dir.join(format!("{child}.rs")), dir.join(&child).join("mod.rs"));
            let path = if read(&flat).is_some() {
                flat
            } else if read(&nested).is_some() {
                nested
            } else {
                bail!(
                    "{}: `mod {child};` but neither {} nor {} exists",
                    file.display(),
                    flat.display(),
                    nested.display()
                );
            };
            let mut cm = m.clone();
            cm.push(child);
            todo.push((cm, path));
        }
        files.insert(m, code);
    }
    let mut g = Graph::default();
    for (m, code) in &files {
        let mut to = BTreeSet::new();
        for (lexical, path) in paths(code) {
            let mut here = m.clone();
            here.extend(lexical);
            if let Some(target) = resolve(&here, &path, &files) {
                if &target != m {
                    to.insert(target);
                }
            }
        }
        g.edges.insert(m.clone(), to);
    }
    Ok(g)
}

/// The source without comments and without the contents of string and
/// char literals (so that neither can look like a path or a brace).
fn strip(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &s[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let (mut depth, mut j) = (0, i);
            while j < b.len() {
                if s[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if s[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
            out.push(' ');
        } else if let Some(n) = raw_string_len(rest) {
            i += n;
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if let Some(n) = char_literal_len(rest) {
            i += n;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"..."`, `r#"..."#`, `br"..."`) at
/// the start of `s`.
fn raw_string_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix("br").or_else(|| s.strip_prefix('r'))?;
    let hashes = body.len() - body.trim_start_matches('#').len();
    let open = body[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = open.find(&close)?;
    Some(s.len() - open.len() + end + close.len())
}

/// The length of a char literal at the start of `s` (`'a'`, `'\n'`,
/// `'\u{1F600}'`), None for a lifetime (`'a`).
fn char_literal_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('\'')?;
    let len = if let Some(esc) = rest.strip_prefix('\\') {
        let c = esc.chars().next()?;
        1 + c.len_utf8() + esc[c.len_utf8()..].find('\'')?
    } else {
        rest.chars().next()?.len_utf8()
    };
    (rest[len..].starts_with('\'')).then_some(len + 2)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `mod x;` declarations (not inline modules, not `mod x {`).
fn declared_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("mod ") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + 4..].trim_start();
        let name: String = after.chars().take_while(|c| is_ident(*c)).collect();
        if !before.is_some_and(is_ident) && !name.is_empty() && after[name.len()..].trim_start().starts_with(';') {
            out.push(name);
        }
        rest = &rest[i + 4..];
    }
    out
}

/// Every path of two or more segments in `code`, with the inline modules
/// it sits in: (inline modules, segments). Groups are expanded:
/// `a::{b, c::d}` gives `a::b` and `a::c::d`.
fn paths(code: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    // Inline modules: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            depth += 1;
            if let Some(m) = pending_mod.take() {
                inline.push((m, depth));
            }
            i += 1;
        } else if c == '}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
        } else if c == ';' {
            pending_mod = None;
            i += 1;
        } else if is_ident(c) && (i == 0 || !is_ident(chars[i - 1])) {
            let word: String = chars[i..].iter().take_while(|c| is_ident(**c)).collect();
            let end = i + word.len();
            if word == "mod" {
                let name: String =
                    chars[end..].iter().skip_while(|c| c.is_whitespace()).take_while(|c| is_ident(**c)).collect();
                pending_mod = (!name.is_empty()).then_some(name);
                i = end;
                continue;
            }
            let lexical: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
            let (found, next) = path_at(&chars, i);
            for p in found.into_iter().filter(|p| p.len() >= 2) {
                out.push((lexical.clone(), p));
            }
            i = next.max(end);
        } else {
            i += 1;
        }
    }
    out
}

/// The path starting at `chars[i]` (an identifier): its expansions and
/// where it ends.
fn path_at(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let mut segs = Vec::new();
    loop {
        let word: String = chars[i..].iter().take_while(|c| is_ident(**c)).collect();
        if word.is_empty() {
            break;
        }
        segs.push(word.clone());
        i += word.len();
        let j = skip_ws(i);
        if !(chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':')) {
            return (vec![segs], i);
        }
        i = skip_ws(j + 2);
        if chars.get(i) == Some(&'*') {
            segs.push("*".into());
            return (vec![segs], i + 1);
        }
        if chars.get(i) == Some(&'{') {
            // A group: each item is a path of its own below `segs`.
            let mut out = Vec::new();
            i += 1;
            loop {
                i = skip_ws(i);
                match chars.get(i) {
                    Some('}') => return (out, i + 1),
                    Some(',') => i += 1,
                    Some(c) if is_ident(*c) => {
                        let (sub, next) = path_at(chars, i);
                        for s in sub {
                            out.push(segs.iter().cloned().chain(s.into_iter().filter(|w| w != "self")).collect());
                        }
                        i = next;
                        // `as name`, or `*`.
                        while chars.get(skip_ws(i)).is_some_and(|c| !matches!(c, ',' | '}')) {
                            i = skip_ws(i) + 1;
                        }
                    }
                    Some(_) => i += 1,
                    None => return (out, i),
                }
            }
        }
    }
    (vec![segs], i)
}

/// The deepest file module `path` names from module `here` (which may be
/// an inline module inside a file's), if it names one.
fn resolve(here: &Module, path: &[String], files: &BTreeMap<Module, String>) -> Option<Module> {
    // `here` without its inline modules: the file's module.
    let mut file = here.clone();
    while !files.contains_key(&file) {
        file.pop();
    }
    let (mut at, rest) = match path[0].as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (here.clone(), &path[1..]),
        "super" => {
            let mut at = here.clone();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                at.pop()?;
                rest = &rest[1..];
            }
            (at, rest)
        }
        // A relative path: a child module of the file's module.
        child => {
            let mut c = file.clone();
            c.push(child.to_string());
            if !files.contains_key(&c) {
                return None;
            }
            (c, &path[1..])
        }
    };
    for seg in rest {
        let mut next = at.clone();
        next.push(seg.clone());
        if !files.contains_key(&next) && !here.starts_with(&next) {
            break;
        }
        at = next;
    }
    // Inline modules are part of their file's module.
    while !files.contains_key(&at) {
        at.pop();
    }
    Some(at)
}

/// A set of modules that all reach one another (a strongly connected
/// component of the graph), and one cycle through it.
#[derive(Debug)]
pub struct Cycle {
    pub members: Vec<Module>,
    /// From the first member back to it (first module repeated at the end).
    pub path: Vec<Module>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let path: Vec<String> = self.path.iter().map(name).collect();
        let members: Vec<String> = self.members.iter().map(name).collect();
        write!(f, "{} ({} modules in the cycle: {})", path.join(" -> "), members.len(), members.join(", "))
    }
}

/// The cycles of the graph: each strongly connected component of more than
/// one module.
pub fn cycles(g: &Graph) -> Vec<Cycle> {
    // Tarjan's algorithm, iterative.
    let nodes: Vec<&Module> = g.edges.keys().collect();
    let index_of: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let succ: Vec<Vec<usize>> =
        nodes.iter().map(|m| g.edges[*m].iter().filter_map(|t| index_of.get(t).copied()).collect()).collect();
    let n = nodes.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut next, mut sccs) = (Vec::new(), 0, Vec::new());
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut k)) = work.last_mut() {
            if *k == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = succ[v].get(*k) {
                *k += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    sccs.push(scc);
                }
            }
        }
    }
    sccs.into_iter()
        .map(|scc| {
            // One cycle: a shortest way back to the component's first module.
            let members: BTreeSet<usize> = scc.iter().copied().collect();
            let first = *members.iter().next().unwrap();
            let mut prev = BTreeMap::new();
            let mut queue = std::collections::VecDeque::from([first]);
            let mut last = first;
            'bfs: while let Some(v) = queue.pop_front() {
                for &w in &succ[v] {
                    if w == first {
                        last = v;
                        break 'bfs;
                    }
                    if members.contains(&w) && !prev.contains_key(&w) {
                        prev.insert(w, v);
                        queue.push_back(w);
                    }
                }
            }
            let mut cycle = vec![first];
            let mut v = last;
            while v != first {
                cycle.push(v);
                v = prev[&v];
            }
            cycle[1..].reverse();
            cycle.push(first);
            Cycle {
                members: members.iter().map(|&i| nodes[i].clone()).collect(),
                path: cycle.into_iter().map(|i| nodes[i].clone()).collect(),
            }
        })
        .collect()
}

/// The root files of the workspace's crates: `src/lib.rs` and
/// `src/main.rs` of each member of the root Cargo.toml.
fn workspace_roots(ws: &Path) -> Result<Vec<PathBuf>> {
    let toml = std::fs::read_to_string(ws.join("Cargo.toml")).context("reading Cargo.toml")?;
    let members = toml
        .split("members")
        .nth(1)
        .and_then(|r| r.split_once('[').map(|(_, r)| r))
        .and_then(|r| r.split_once(']').map(|(l, _)| l))
        .context("Cargo.toml: no `members = [...]`")?;
    let mut roots = Vec::new();
    for m in members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()) {
        for f in ["src/lib.rs", "src/main.rs"] {
            let p = ws.join(m).join(f);
            if p.is_file() {
                roots.push(p);
            }
        }
    }
    Ok(roots)
}

/// `cargo xtask cycles`: the import cycles of every crate in the workspace.
pub fn cycles_cmd() -> Result<i32> {
    let ws = crate::paths::workspace_root();
    let mut found = 0;
    for root in workspace_roots(&ws)? {
        let g = read_crate(&root)?;
        let shown = root.strip_prefix(&ws).unwrap_or(&root).display().to_string();
        let cs = cycles(&g);
        println!("{shown}: {} modules, {} cycle(s)", g.edges.len(), cs.len());
        for c in &cs {
            println!("  {c}");
        }
        found += cs.len();
    }
    Ok(if found == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let map: BTreeMap<PathBuf, String> = files.iter().map(|(p, s)| (PathBuf::from(p), s.to_string())).collect();
        read_with(Path::new("src/main.rs"), &|p: &Path| map.get(p).cloned()).unwrap()
    }

    fn edges(g: &Graph, m: &str) -> Vec<String> {
        let m: Module = if m == "crate" { vec![] } else { m.split("::").map(String::from).collect() };
        g.edges[&m].iter().map(name).collect()
    }

    #[test]
    fn paths_uses_and_groups_are_edges() {
        let g = graph(&[
            ("src/main.rs", "mod a;\nmod b;\nmod c;\nfn main() { a::run(); }"),
            ("src/a.rs", "use crate::{b::{self, X}, c::Y as Z};\n// crate::main in a comment\nconst S: &str = \"c::x\";"),
            ("src/b.rs", "mod inner;\npub struct X;\nfn f() { inner::g(); let s = 'c'; }\n#[cfg(test)]\nmod tests { use super::*; }"),
            ("src/b/inner.rs", "pub fn g() { super::super::c::h() }"),
            ("src/c.rs", "pub struct Y; pub fn h() {}"),
        ]);
        assert_eq!(edges(&g, "crate"), ["a"]);
        assert_eq!(edges(&g, "a"), ["b", "c"]);
        assert_eq!(edges(&g, "b"), ["b::inner"], "`use super::*` in an inline module is the file's own");
        assert_eq!(edges(&g, "b::inner"), ["c"]);
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn cycles_are_found_and_shown() {
        let g = graph(&[
            ("src/main.rs", "mod a;\nmod b;\nmod c;\nmod d;\npub struct Args;\nfn main() { a::run(); }"),
            ("src/a.rs", "pub fn run() { crate::b::go() }"),
            ("src/b.rs", "pub fn go() { crate::c::f() }"),
            ("src/c.rs", "use crate::Args;\npub fn f() { crate::a::run() }"),
            ("src/d/mod.rs", "mod e;\nuse e::E;"),
            ("src/d/e.rs", "use super::F;\npub struct E;"),
        ]);
        let cs: Vec<String> = cycles(&g).iter().map(|c| c.to_string()).collect();
        assert_eq!(cs.len(), 2, "{cs:?}");
        assert!(cs.contains(&"d -> d::e -> d (2 modules in the cycle: d, d::e)".to_string()), "{cs:?}");
        // crate -> a -> b -> c -> crate (c names the root's Args) and c -> a.
        let big = cs.iter().find(|c| c.contains("crate")).unwrap();
        assert!(
            big.starts_with("crate -> a -> ") && big.ends_with("(4 modules in the cycle: crate, a, b, c)"),
            "{big}"
        );
    }

    #[test]
    fn literals_and_lifetimes() {
        assert_eq!(strip("a /* x /* y */ z */ b"), "a   b");
        assert_eq!(strip(r##"x r#"crate::a "}"# y"##), "x \"\" y");
        assert_eq!(strip("f::<'a>('{', \"}\\\"\")"), "f::<'a>(' ', \"\")");
        assert_eq!(strip("['\\'', '\\u{7b}', '}']"), "[' ', ' ', ' ']");
        assert_eq!(declared_modules("mod a;\npub(crate) mod b ;\nmod c { }\nfn mod_x() {}"), ["a", "b"]);
    }

    #[test]
    fn a_missing_module_file_is_named() {
        let files = [("src/main.rs", "mod gone;")];
        let map: BTreeMap<PathBuf, String> = files.iter().map(|(p, s)| (PathBuf::from(p), s.to_string())).collect();
        let e = read_with(Path::new("src/main.rs"), &|p: &Path| map.get(p).cloned()).unwrap_err().to_string();
        assert!(e.contains("`mod gone;`") && e.contains("src/gone.rs") && e.contains("src/gone/mod.rs"), "{e}");
    }

    /// The xtask's own modules import one another without a cycle.
    #[test]
    fn the_xtask_has_no_cycle() {
        let g = read_crate(&crate::paths::workspace_root().join("xtask/src/main.rs")).unwrap();
        assert!(g.edges.len() > 20, "{:?}", g.edges.keys());
        let cs = cycles(&g);
        assert!(cs.is_empty(), "cycles: {}", cs.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; "));
    }
}
