//! The workspace's module graph, file by file, and its cycles.
//!
//! Every crate root of the workspace (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`) is read with
//! the files its `mod name;` declarations name. An edge `a -> b` means file `a` names something
//! that is defined in file `b` of the same crate:
//! - a path that starts with `crate`, `self`, `super`, a child module, or a name the file bound
//!   with `use` (`use crate::vm::Vm;` and `vm::run::enter(..)` both count);
//! - resolved to the file that defines the named item: a module's file, or, for an item, the file
//!   of the module that defines it, following `use` re-exports (so a facade `mod.rs` that
//!   re-exports a child's type is not in the way);
//! - a crate-local `macro_rules!` macro invoked by name is an edge to the file that defines it.
//!
//! Declaring a module (`mod child;`) is not an edge. Other crates (`hyp_abi::..`, `core::..`) are
//! outside the graph: cargo already refuses a cycle between crates. What this cannot see: names
//! reached only through trait method calls or type inference (they need an import somewhere, and
//! that import is seen).
//!
//! `cargo xtask cycles` prints the cycles (exit status 1 if any) or, with `--dot`, the graph;
//! the test `the_workspace_has_no_import_cycles` keeps it at zero.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A token of Rust source, comments and literals removed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// Splits Rust source into identifiers, `::` and single punctuation characters with their line
/// numbers; comments, strings, chars and numbers are dropped, lifetimes too.
fn lex(src: &str) -> Vec<(Tok, u32)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0usize, 1u32);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += u32::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if (ch == 'r' || (ch == 'b' && at(i + 1) == 'r')) && {
            let j = if ch == 'b' { i + 2 } else { i + 1 };
            let mut k = j;
            while at(k) == '#' {
                k += 1;
            }
            at(k) == '"' && (k > j || at(j) == '"')
        } {
            // Raw string: r"..", r#".."#, br#".."#.
            let mut j = if ch == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (1..=hashes).all(|h| at(j + h) == '#') {
                    j += 1 + hashes;
                    break;
                }
                line += u32::from(c[j] == '\n');
                j += 1;
            }
            i = j;
        } else if ch == '"' || (ch == 'b' && at(i + 1) == '"') || (ch == 'c' && at(i + 1) == '"') {
            i += if ch == '"' { 1 } else { 2 };
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                line += u32::from(at(i) == '\n');
                i += 1;
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            let s = if ch == '\'' { i + 1 } else { i + 2 };
            if at(s) == '\\' {
                // Escaped char literal: skip to the closing quote.
                let mut j = s + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(s + 1) == '\'' {
                i = s + 2;
            } else {
                // A lifetime or label: skip the quote and its name.
                let mut j = s;
                while at(j).is_alphanumeric() || at(j) == '_' {
                    j += 1;
                }
                i = j;
            }
        } else if ch.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let s = i;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            let mut word: String = c[s..i].iter().collect();
            if let Some(raw) = word.strip_prefix("r#") {
                word = raw.to_string();
            }
            if word == "r" && at(i) == '#' {
                // r#ident
                let s2 = i + 1;
                let mut j = s2;
                while at(j).is_alphanumeric() || at(j) == '_' {
                    j += 1;
                }
                word = c[s2..j].iter().collect();
                i = j;
            }
            out.push((Tok::Ident(word), line));
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::Sep, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// One module of a crate: where it lives and what it defines and binds.
#[derive(Default, Debug)]
struct Module {
    file: PathBuf,
    /// Items defined at the module's top level (fn, struct, const, mod, ...).
    items: BTreeSet<String>,
    /// `use` bindings of the module: name -> absolute path (crate-relative segments).
    binds: BTreeMap<String, Vec<String>>,
    /// `use a::b::*`: absolute paths of glob-imported modules.
    globs: Vec<Vec<String>>,
}

/// A path named in a file, to resolve once the whole crate is known.
struct Ref {
    file: PathBuf,
    line: u32,
    /// The module the reference is written in.
    module: Vec<String>,
    path: Vec<String>,
    /// A macro invocation `name!` (path is the name alone).
    is_macro: bool,
}

/// A crate's module tree and the references its files make.
#[derive(Default)]
struct Crate {
    modules: BTreeMap<Vec<String>, Module>,
    refs: Vec<Ref>,
    /// macro_rules! name -> defining file.
    macros: BTreeMap<String, PathBuf>,
}

/// A `use` statement seen: (module, file, line, the paths it binds).
type UseSeen = (Vec<String>, PathBuf, u32, Vec<(Vec<String>, Option<String>)>);
/// A path seen in code: (module, file, line, path, is a macro).
type PathSeen = (Vec<String>, PathBuf, u32, Vec<String>, bool);

/// An edge of the graph with the first place that makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: PathBuf,
    pub to: PathBuf,
    pub line: u32,
    pub what: String,
}

const ITEM_KEYWORDS: [&str; 9] = ["fn", "struct", "enum", "trait", "type", "union", "static", "const", "mod"];
/// Keywords that start a path but are not module names.
const NOT_MODULES: [&str; 4] = ["Self", "std", "core", "alloc"];

/// Expands a `use` tree starting at `toks[i]` (after `use`), returning (path, binding) pairs and
/// the index after the tree. Binding `None` means a glob.
fn use_tree(
    toks: &[(Tok, u32)],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(i).map(|t| &t.0) {
            Some(Tok::Sep) => i += 1,
            Some(Tok::Ident(w)) if w == "as" => {
                if let Some((Tok::Ident(alias), _)) = toks.get(i + 1) {
                    if alias != "_" {
                        out.push((path.clone(), Some(alias.clone())));
                    }
                }
                return i + 2;
            }
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
            }
            Some(Tok::Punct('*')) => {
                out.push((path, None));
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_tree(toks, i, &path, out),
                    }
                }
            }
            _ => {
                if let Some(last) = path.last() {
                    let name =
                        if last == "self" { path.get(path.len().wrapping_sub(2)).cloned() } else { Some(last.clone()) };
                    let p = if last == "self" { path[..path.len() - 1].to_vec() } else { path.clone() };
                    if let Some(n) = name {
                        out.push((p, Some(n)));
                    }
                }
                return i;
            }
        }
    }
}

/// Makes `path` (as written in module `module`) absolute, or None for another crate's path.
/// `children` says whether a name is a child module of a module.
fn absolute(
    module: &[String],
    path: &[String],
    binds: &BTreeMap<String, Vec<String>>,
    is_child: &dyn Fn(&[String], &str) -> bool,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let rest = &path[1..];
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => {
            let mut m = module.to_vec();
            m.pop()?;
            let mut k = 0;
            while rest.get(k).map(String::as_str) == Some("super") {
                m.pop()?;
                k += 1;
            }
            let mut v = m;
            v.extend(rest[k..].iter().cloned());
            return Some(v);
        }
        _ if is_child(module, first) => {
            let mut m = module.to_vec();
            m.push(first.clone());
            m
        }
        _ => match binds.get(first) {
            Some(b) => b.clone(),
            None => return None,
        },
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

impl Crate {
    /// Reads the crate rooted at `root_file` through `read`, following `mod name;`.
    fn load(root_file: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Result<Crate, String> {
        let mut krate = Crate::default();
        // (module path, file, directory for its children)
        let mut todo: Vec<(Vec<String>, PathBuf, PathBuf)> =
            vec![(Vec::new(), root_file.to_path_buf(), root_file.parent().unwrap().to_path_buf())];
        // Uses are resolved after the tree is complete: (module, file, line, tree paths).
        let mut uses: Vec<UseSeen> = Vec::new();
        let mut paths: Vec<PathSeen> = Vec::new();
        while let Some((mpath, file, dir)) = todo.pop() {
            let src = read(&file).ok_or_else(|| {
                format!("{}: cannot read (declared as module `{}`)", file.display(), mpath.join("::"))
            })?;
            let toks = lex(&src);
            // Stack of inline modules: (module path, brace depth of its body, child dir).
            let mut stack: Vec<(Vec<String>, usize, PathBuf)> = vec![(mpath.clone(), 0, dir.clone())];
            krate.modules.entry(mpath.clone()).or_default().file = file.clone();
            let mut depth = 0usize;
            let mut i = 0;
            while i < toks.len() {
                let (cur, body_depth, cur_dir) = stack.last().cloned().unwrap();
                match &toks[i].0 {
                    Tok::Punct('{') => {
                        depth += 1;
                        i += 1;
                    }
                    Tok::Punct('}') => {
                        if depth == body_depth && stack.len() > 1 {
                            stack.pop();
                        }
                        depth = depth.saturating_sub(1);
                        i += 1;
                    }
                    Tok::Ident(w) if w == "mod" && depth == body_depth => {
                        let Some((Tok::Ident(name), _)) = toks.get(i + 1) else {
                            i += 1;
                            continue;
                        };
                        let mut child = cur.clone();
                        child.push(name.clone());
                        krate.modules.entry(cur.clone()).or_default().items.insert(name.clone());
                        match toks.get(i + 2).map(|t| &t.0) {
                            Some(Tok::Punct(';')) => {
                                let a = cur_dir.join(format!("{name}.rs"));
                                let b = cur_dir.join(name).join("mod.rs");
                                let f = if read(&a).is_some() { a } else { b };
                                todo.push((child, f, cur_dir.join(name)));
                                i += 3;
                            }
                            Some(Tok::Punct('{')) => {
                                depth += 1;
                                krate.modules.entry(child.clone()).or_default().file = file.clone();
                                stack.push((child, depth, cur_dir.join(name)));
                                i += 3;
                            }
                            _ => i += 2,
                        }
                    }
                    Tok::Ident(w) if w == "macro_rules" && matches!(toks.get(i + 1), Some((Tok::Punct('!'), _))) => {
                        if let Some((Tok::Ident(name), _)) = toks.get(i + 2) {
                            krate.macros.insert(name.clone(), file.clone());
                        }
                        i += 3;
                    }
                    Tok::Ident(w) if ITEM_KEYWORDS.contains(&w.as_str()) && depth == body_depth => {
                        let mut j = i + 1;
                        if matches!(toks.get(j), Some((Tok::Ident(m), _)) if m == "mut" || m == "fn") {
                            j += 1;
                        }
                        if let Some((Tok::Ident(name), _)) = toks.get(j) {
                            krate.modules.entry(cur.clone()).or_default().items.insert(name.clone());
                        }
                        i = j;
                    }
                    Tok::Ident(w) if w == "use" => {
                        let line = toks[i].1;
                        let mut tree = Vec::new();
                        let start = if toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep) { i + 2 } else { i + 1 };
                        i = use_tree(&toks, start, &[], &mut tree);
                        uses.push((cur.clone(), file.clone(), line, tree));
                    }
                    Tok::Ident(first) if !NOT_MODULES.contains(&first.as_str()) => {
                        // A path `a::b::c` (or a macro `name!`).
                        let line = toks[i].1;
                        if matches!(toks.get(i + 1), Some((Tok::Punct('!'), _)))
                            && (i == 0 || toks[i - 1].0 != Tok::Sep)
                        {
                            paths.push((cur.clone(), file.clone(), line, vec![first.clone()], true));
                            i += 2;
                            continue;
                        }
                        let mut p = vec![first.clone()];
                        let mut j = i + 1;
                        while toks.get(j).map(|t| &t.0) == Some(&Tok::Sep) {
                            match toks.get(j + 1) {
                                Some((Tok::Ident(n), _)) => {
                                    p.push(n.clone());
                                    j += 2;
                                }
                                _ => break,
                            }
                        }
                        if p.len() > 1 && (i == 0 || toks[i - 1].0 != Tok::Sep) {
                            let is_macro = matches!(toks.get(j), Some((Tok::Punct('!'), _)));
                            paths.push((cur.clone(), file.clone(), line, p, is_macro));
                        }
                        i = j.max(i + 1);
                    }
                    _ => i += 1,
                }
            }
        }
        // Bind the uses now that every module is known.
        let names: BTreeSet<Vec<String>> = krate.modules.keys().cloned().collect();
        let is_child = |m: &[String], n: &str| {
            let mut v = m.to_vec();
            v.push(n.to_string());
            names.contains(&v)
        };
        let empty = BTreeMap::new();
        for (module, file, line, tree) in uses {
            for (path, bind) in tree {
                // Paths in `use` resolve like other paths but without this module's own bindings
                // (a `use` cannot build on another `use` of the same module in a cycle we care
                // about; the crate-local prefixes decide).
                let Some(abs) = absolute(&module, &path, &empty, &is_child) else { continue };
                let m = krate.modules.entry(module.clone()).or_default();
                match bind {
                    Some(name) => {
                        m.binds.insert(name, abs.clone());
                    }
                    None => m.globs.push(abs.clone()),
                }
                krate.refs.push(Ref { file: file.clone(), line, module: module.clone(), path: abs, is_macro: false });
            }
        }
        for (module, file, line, path, is_macro) in paths {
            let binds = krate.modules.get(&module).map(|m| m.binds.clone()).unwrap_or_default();
            if is_macro && path.len() == 1 {
                krate.refs.push(Ref { file, line, module, path, is_macro });
                continue;
            }
            if let Some(abs) = absolute(&module, &path, &binds, &is_child) {
                krate.refs.push(Ref { file, line, module, path: abs, is_macro });
            }
        }
        Ok(krate)
    }

    /// The file that defines what the absolute path `path` names (None if it names nothing of
    /// this crate).
    fn resolve(&self, path: &[String], hops: u32) -> Option<PathBuf> {
        if hops > 16 {
            return None;
        }
        // The longest prefix that is a module.
        let mut k = path.len();
        while k > 0 && !self.modules.contains_key(&path[..k]) {
            k -= 1;
        }
        let m = self.modules.get(&path[..k])?;
        let Some(item) = path.get(k) else { return Some(m.file.clone()) };
        if m.items.contains(item) {
            return Some(m.file.clone());
        }
        if let Some(target) = m.binds.get(item) {
            let mut t = target.clone();
            t.extend(path[k + 1..].iter().cloned());
            if t.as_slice() != path {
                if let Some(f) = self.resolve(&t, hops + 1) {
                    return Some(f);
                }
            }
        }
        for g in &m.globs {
            let mut t = g.clone();
            t.extend(path[k..].iter().cloned());
            if let Some(gm) = self.modules.get(g) {
                if gm.items.contains(item) || gm.binds.contains_key(item) {
                    return self.resolve(&t, hops + 1);
                }
            }
        }
        // An item we did not see being defined (e.g. made by a macro): the module's file.
        Some(m.file.clone())
    }

    fn edges(&self) -> Vec<Edge> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for r in &self.refs {
            let to = if r.is_macro && r.path.len() == 1 {
                match self.macros.get(&r.path[0]) {
                    Some(f) => f.clone(),
                    None => continue,
                }
            } else {
                match self.resolve(&r.path, 0) {
                    Some(f) => f,
                    None => continue,
                }
            };
            if to == r.file || !seen.insert((r.file.clone(), to.clone())) {
                continue;
            }
            let what =
                if r.is_macro { format!("{}!", r.path.join("::")) } else { format!("crate::{}", r.path.join("::")) };
            let _ = &r.module;
            out.push(Edge { from: r.file.clone(), to, line: r.line, what });
        }
        out
    }
}

/// Strongly connected components with more than one file (Tarjan), each sorted, listed in
/// order of their first file.
fn cycles(edges: &[Edge]) -> Vec<Vec<PathBuf>> {
    let mut nodes: BTreeSet<&PathBuf> = BTreeSet::new();
    for e in edges {
        nodes.insert(&e.from);
        nodes.insert(&e.to);
    }
    let nodes: Vec<&PathBuf> = nodes.into_iter().collect();
    let idx: BTreeMap<&PathBuf, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut adj = vec![Vec::new(); nodes.len()];
    for e in edges {
        adj[idx[&e.from]].push(idx[&e.to]);
    }
    struct T {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], t: &mut T) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &adj[v] {
            match t.index[w] {
                None => {
                    visit(w, adj, t);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let n = nodes.len();
    let mut t =
        T { index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: Vec::new(), next: 0, out: Vec::new() };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(v, &adj, &mut t);
        }
    }
    let mut out: Vec<Vec<PathBuf>> = t
        .out
        .into_iter()
        .map(|c| {
            let mut v: Vec<PathBuf> = c.into_iter().map(|i| nodes[i].clone()).collect();
            v.sort();
            v
        })
        .collect();
    out.sort();
    out
}

/// The crate roots of the workspace under `root` (every `src/lib.rs`, `src/main.rs` and
/// `src/bin/*.rs` next to a Cargo.toml), skipping `target/` and hidden folders.
pub fn crate_roots(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if dir.join("Cargo.toml").is_file() {
            for f in ["src/lib.rs", "src/main.rs"] {
                if dir.join(f).is_file() {
                    out.push(dir.join(f));
                }
            }
            if let Ok(rd) = std::fs::read_dir(dir.join("src/bin")) {
                for e in rd.flatten() {
                    if e.path().extension().is_some_and(|x| x == "rs") {
                        out.push(e.path());
                    }
                }
            }
        }
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if e.path().is_dir() && !name.starts_with('.') && name != "target" {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Every crate's edges (paths relative to `root`), and the cycles among them.
pub struct Graph {
    pub edges: Vec<Edge>,
    pub cycles: Vec<Vec<PathBuf>>,
}

pub fn workspace(root: &Path) -> Result<Graph, String> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let mut edges = Vec::new();
    let mut all_cycles = Vec::new();
    for r in crate_roots(root) {
        let krate = Crate::load(&r, &read)?;
        let mut e = krate.edges();
        for x in &mut e {
            x.from = x.from.strip_prefix(root).unwrap_or(&x.from).to_path_buf();
            x.to = x.to.strip_prefix(root).unwrap_or(&x.to).to_path_buf();
        }
        all_cycles.extend(cycles(&e));
        edges.extend(e);
    }
    Ok(Graph { edges, cycles: all_cycles })
}

/// A cycle in words: each file, and the edge that leads from it to the next file of the cycle.
pub fn describe(graph: &Graph, cycle: &[PathBuf]) -> String {
    let set: BTreeSet<&PathBuf> = cycle.iter().collect();
    let mut s = format!("cycle of {} files:\n", cycle.len());
    for e in &graph.edges {
        if set.contains(&e.from) && set.contains(&e.to) {
            s += &format!("  {}:{} -> {} ({})\n", e.from.display(), e.line, e.to.display(), e.what);
        }
    }
    s
}

/// `cargo xtask modgraph`: the cycles, or the graph in Graphviz form.
pub fn run(root: &Path, dot: bool) -> anyhow::Result<bool> {
    let g = workspace(root).map_err(anyhow::Error::msg)?;
    if dot {
        println!("digraph modules {{");
        for e in &g.edges {
            println!("  \"{}\" -> \"{}\";", e.from.display(), e.to.display());
        }
        println!("}}");
        return Ok(g.cycles.is_empty());
    }
    for c in &g.cycles {
        print!("{}", describe(&g, c));
    }
    println!(
        "{} files, {} edges, {} cycles",
        g.edges.iter().flat_map(|e| [&e.from, &e.to]).collect::<BTreeSet<_>>().len(),
        g.edges.len(),
        g.cycles.len()
    );
    Ok(g.cycles.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krate(files: &[(&str, &str)]) -> Crate {
        let map: BTreeMap<PathBuf, String> = files.iter().map(|(p, s)| (PathBuf::from(p), s.to_string())).collect();
        Crate::load(Path::new("src/lib.rs"), &|p| map.get(p).cloned()).unwrap()
    }

    fn edge_set(k: &Crate) -> BTreeSet<(String, String)> {
        k.edges().into_iter().map(|e| (e.from.display().to_string(), e.to.display().to_string())).collect()
    }

    #[test]
    fn lexer_skips_comments_strings_and_lifetimes() {
        let t = lex("a::b // crate::x\n/* crate::y /* nested */ */ \"crate::z\" r#\"crate::w\"# 'c' '\\n' fn f<'a>(x: &'a u8) {}");
        let idents: Vec<String> =
            t.iter().filter_map(|(t, _)| if let Tok::Ident(s) = t { Some(s.clone()) } else { None }).collect();
        assert_eq!(idents, ["a", "b", "fn", "f", "x", "u8"]);
        assert_eq!(t.last().unwrap().1, 2);
    }

    #[test]
    fn a_sibling_cycle_is_found() {
        let k = krate(&[
            ("src/lib.rs", "mod a; mod b; mod c;"),
            ("src/a.rs", "use crate::b::B; pub struct A;"),
            ("src/b.rs", "pub struct B; fn f() { crate::a::A; }"),
            ("src/c.rs", "use super::a::A;"),
        ]);
        let e = k.edges();
        let c = cycles(&e);
        assert_eq!(c, vec![vec![PathBuf::from("src/a.rs"), PathBuf::from("src/b.rs")]]);
        assert!(edge_set(&k).contains(&("src/c.rs".into(), "src/a.rs".into())));
    }

    #[test]
    fn a_facade_reexport_is_followed_to_the_defining_file() {
        // vm/mod.rs re-exports vm/run.rs's item and uses vm/types.rs; run.rs uses types through
        // the facade: no cycle, and the edge goes to the defining file.
        let k = krate(&[
            ("src/lib.rs", "mod vm; mod user;"),
            ("src/vm/mod.rs", "mod run; mod types; pub use run::enter; pub use self::types::Vm;"),
            ("src/vm/run.rs", "use super::Vm; pub fn enter(v: &Vm) {}"),
            ("src/vm/types.rs", "pub struct Vm;"),
            ("src/user.rs", "fn f() { crate::vm::enter(&crate::vm::Vm); }"),
        ]);
        let e = edge_set(&k);
        assert!(e.contains(&("src/vm/run.rs".into(), "src/vm/types.rs".into())));
        assert!(e.contains(&("src/user.rs".into(), "src/vm/run.rs".into())));
        assert!(e.contains(&("src/user.rs".into(), "src/vm/types.rs".into())));
        assert!(!e.contains(&("src/vm/run.rs".into(), "src/vm/mod.rs".into())));
        assert!(cycles(&k.edges()).is_empty());
    }

    #[test]
    fn a_child_using_its_parents_own_item_is_a_cycle_with_a_parent_using_it() {
        let k = krate(&[
            ("src/lib.rs", "mod vm;"),
            ("src/vm/mod.rs", "mod run; pub struct Vm; fn go() { run::enter(); }"),
            ("src/vm/run.rs", "use super::Vm; pub fn enter() {}"),
        ]);
        assert_eq!(cycles(&k.edges()).len(), 1);
    }

    #[test]
    fn imported_modules_and_macros_make_edges() {
        let k = krate(&[
            ("src/lib.rs", "mod log; mod vm; mod dev;"),
            ("src/log.rs", "macro_rules! trace { () => {} }"),
            ("src/vm/mod.rs", "pub mod run;"),
            ("src/vm/run.rs", "pub fn enter() {}"),
            ("src/dev.rs", "use crate::vm; fn f() { vm::run::enter(); trace!(); }"),
        ]);
        let e = edge_set(&k);
        assert!(e.contains(&("src/dev.rs".into(), "src/vm/run.rs".into())));
        assert!(e.contains(&("src/dev.rs".into(), "src/log.rs".into())));
    }

    #[test]
    fn inline_modules_and_other_crates() {
        let k = krate(&[
            ("src/lib.rs", "mod a; mod b;"),
            ("src/a.rs", "pub mod inner { pub fn g() { hyp_abi::x::y(); core::mem::swap(); } } #[cfg(test)] mod tests { use super::*; use crate::b::B; }"),
            ("src/b.rs", "pub struct B; fn f() { crate::a::inner::g(); }"),
        ]);
        // a's inline test module uses b, b uses a: a cycle at the file level (tests count).
        assert_eq!(cycles(&k.edges()).len(), 1);
        assert!(!k.edges().iter().any(|e| e.what.contains("hyp_abi") || e.what.contains("core")));
    }

    /// The rule of issue 24: no file of any crate of the workspace takes part in an import cycle.
    #[test]
    fn the_workspace_has_no_import_cycles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let g = workspace(root).unwrap();
        assert!(g.edges.len() > 100, "the graph has only {} edges: the parser lost the workspace", g.edges.len());
        let text: String = g.cycles.iter().map(|c| describe(&g, c)).collect();
        assert!(g.cycles.is_empty(), "{text}");
    }
}
