//! Property test: random range updates against an interval-map model.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec::Vec;

use super::helpers::*;
use crate::mm::pgtable::Stage2;
use crate::mm::prot::{Attrs, Leaf, Owner, PageState};
use crate::mm::testenv::TestEnv;
use crate::mm::Error;

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G: u64 = 1 << 30;
/// The tested IPA window (inside a 40-bit tree).
const SPACE: u64 = 4 * G;

/// Model: start → (end, leaf at start); covers [0, SPACE) without gaps.
#[derive(Clone, Debug)]
struct Model(BTreeMap<u64, (u64, Leaf)>);

impl Model {
    fn new() -> Self {
        let mut m = BTreeMap::new();
        m.insert(0, (SPACE, Leaf::Invalid(Owner::None)));
        Model(m)
    }
    fn cut(&mut self, at: u64) {
        if at >= SPACE {
            return;
        }
        let (&s, &(e, l)) = self.0.range(..=at).next_back().unwrap();
        if s < at {
            self.0.insert(s, (at, l));
            self.0.insert(at, (e, l.offset(at - s)));
        }
    }
    fn set(&mut self, ipa: u64, size: u64, leaf: Leaf) {
        self.cut(ipa);
        self.cut(ipa + size);
        let keys: Vec<u64> = self.0.range(ipa..ipa + size).map(|(k, _)| *k).collect();
        for k in keys {
            self.0.remove(&k);
        }
        self.0.insert(ipa, (ipa + size, leaf));
    }
    fn at(&self, a: u64) -> Leaf {
        let (&s, &(_, l)) = self.0.range(..=a).next_back().unwrap();
        l.offset(a - s)
    }
}

#[derive(Clone, Debug)]
struct Op {
    ipa: u64,
    size: u64,
    leaf: Leaf,
    budget: Option<usize>,
}

fn op() -> impl Strategy<Value = Op> {
    let gran = prop_oneof![Just(K4), Just(M2), Just(G)];
    (gran, prop_oneof![0u64..(SPACE / K4), 0u64..(32 * M2 / K4)], 1u64..4, 0u64..8, 0u8..9, 0usize..20).prop_flat_map(
        |(gran, idx, units, extra_pages, kind, b)| {
            let ipa = ((idx * K4) & !(gran - 1)).min(SPACE - gran);
            let mut size = (units * gran + extra_pages * K4 * (kind as u64 % 2)).min(SPACE - ipa);
            // PA deltas keep the PA aligned like the IPA mostly, sometimes not.
            let delta = prop_oneof![Just(0u64), Just(G), Just(M2), Just(K4)];
            let state =
                prop_oneof![Just(PageState::Owned), Just(PageState::SharedOwned), Just(PageState::SharedBorrowed)];
            let attrs = prop_oneof![Just(Attrs::NORMAL_RWX), Just(Attrs::DEVICE_RW)];
            let owner = prop_oneof![Just(Owner::None), Just(Owner::Hyp), (1u16..4).prop_map(Owner::Guest)];
            if size == 0 {
                size = K4;
            }
            (delta, state, attrs, owner).prop_map(move |(delta, state, attrs, owner)| {
                let mut size = size;
                // A misaligned PA forces 4K pages: keep those ranges small.
                if delta == K4 && kind < 4 {
                    size = size.min(8 * M2);
                }
                // Kinds 6-8 write the two "background" values, so ranges
                // become uniform again and merges happen often.
                let leaf = if kind == 6 || kind == 7 {
                    Leaf::Mapped { pa: ipa, attrs: Attrs::NORMAL_RWX, state: PageState::Owned }
                } else if kind == 8 {
                    Leaf::Invalid(Owner::None)
                } else if kind < 4 {
                    Leaf::Mapped { pa: ipa + delta, attrs, state }
                } else {
                    Leaf::Invalid(owner)
                };
                Op { ipa, size, leaf, budget: (b < 3).then_some(b) }
            })
        },
    )
}

fn compare(env: &mut TestEnv, s: &Stage2, model: &Model) {
    for (a, b, _level, leaf) in leaves(env, s, 0, SPACE) {
        // Each model interval overlapping [a, b) must agree at its start.
        assert_eq!(model.at(a), leaf, "at {a:#x}");
        for (&ms, _) in model.0.range(a + 1..b) {
            assert_eq!(model.at(ms), leaf.offset(ms - a), "at {ms:#x}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    /// 24 cases × 450 steps ≈ 10,800 random updates, each checked against
    /// the model, the structure, the allocator and the BBM log.
    #[test]
    fn pgtable_matches_model(ops in proptest::collection::vec(op(), 450)) {
        let mut env = TestEnv::new();
        let mut s = Stage2::new(&mut env, 40, Some(5)).unwrap();
        let mut model = Model::new();
        for o in &ops {
            env.budget = o.budget;
            let before = if o.budget.is_some() { Some(leaves(&mut env, &s, 0, SPACE)) } else { None };
            match s.set(&mut env, o.ipa, o.size, o.leaf) {
                Ok(()) => model.set(o.ipa, o.size, o.leaf),
                Err(Error::NoMem) => {
                    prop_assert!(o.budget.is_some());
                    prop_assert_eq!(Some(leaves(&mut env, &s, 0, SPACE)), before);
                }
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
            env.budget = None;
            compare(&mut env, &s, &model);
            check_structure(&mut env, &s);
            check_alloc(&env, &[&s]);
            env.check_log();
        }
        s.destroy(&mut env);
    }
}
