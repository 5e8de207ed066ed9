//! Benchmark report lines, parsed by `cargo xtask bench`:
//! `[bench] NAME n=N el2=E all=A pte=P tlbi=T alloc=X free=Y` (totals over
//! N repetitions; the software counters are the hyp's, read through a host
//! call or a host service).

/// The hyp's software counters: (descriptor writes, TLBIs, tables allocated, freed).
pub type Counters = [u64; 4];

pub fn diff(a: Counters, b: Counters) -> Counters {
    [b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3]]
}

pub fn report(name: &str, n: u64, (el2, all): (u64, u64), c: Counters) {
    crate::println!(
        "[bench] {} n={} el2={} all={} pte={} tlbi={} alloc={} free={}",
        name,
        n,
        el2,
        all,
        c[0],
        c[1],
        c[2],
        c[3]
    );
}
