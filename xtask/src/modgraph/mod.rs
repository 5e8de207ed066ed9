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

mod lex;
#[cfg(test)]
mod tests;

use lex::{lex, Tok};

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
