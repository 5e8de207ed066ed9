//! The module graph reader's tests: small crates in memory, and the rule
//! itself on this workspace.

use super::lex::{lex, Tok};
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
    let t = lex(
        "a::b // crate::x\n/* crate::y /* nested */ */ \"crate::z\" r#\"crate::w\"# 'c' '\\n' fn f<'a>(x: &'a u8) {}",
    );
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
