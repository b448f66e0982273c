//! Core tests without Python: the training rule against a brute-force model, order/batch/thread
//! independence, backend agreement, save/load, candidate evaluation and input checks.
use _core::memory::{Input, Negatives, TieredMemory};
use _core::rng::SplitMix64;
use _core::tiers::{parse_tier_spec, TierSpec};
use std::collections::HashMap;

struct Data {
    t: usize,
    bits: Vec<u8>,
    targets: Vec<i64>,
}

fn data(seed: u64, b: usize, t: usize, c: usize, density_pct: u64) -> Data {
    let mut r = SplitMix64::new(seed);
    let bits = (0..b * t).map(|_| (r.below(100) < density_pct) as u8).collect();
    // skewed targets
    let targets = (0..b).map(|_| (r.below(c as u64) * r.below(c as u64) / c as u64) as i64).collect();
    Data { t, bits, targets }
}

fn mem(specs: &[TierSpec], t: usize, backends: &[&str], order: Option<&[i64]>) -> TieredMemory {
    let names: Vec<String> = backends.iter().map(|s| s.to_string()).collect();
    TieredMemory::new(specs, t, None, order, &names, 11).unwrap()
}

fn specs() -> Vec<TierSpec> {
    vec![
        TierSpec { count: 3, neurons: 4, bits: 12 },
        TierSpec { count: 5, neurons: 2, bits: 7 },
        TierSpec { count: 4, neurons: 3, bits: 33 },
    ]
}

/// Expected cells from the definition: TRUE if any positive, else FALSE if any negative.
fn brute_force(m: &TieredMemory, d: &Data, negs: &[i64]) -> Vec<HashMap<(u64, u64), u8>> {
    let order = m.order();
    let mut logical = vec![0usize; order.len()];
    for (l, &tok) in order.iter().enumerate() {
        logical[tok as usize] = l;
    }
    let b = d.targets.len();
    let mut out = Vec::new();
    for tier in m.tiers() {
        let s = tier.spec;
        let mut cells: HashMap<(u64, u64), u8> = HashMap::new();
        let key_bits = tier.store.key_bits();
        for e in 0..b {
            let row = &d.bits[e * d.t..(e + 1) * d.t];
            let mut touch = |tok: i64, state: u8| {
                let l = logical[tok as usize];
                if l < tier.start || l >= tier.start + s.count {
                    return;
                }
                for k in 0..s.neurons {
                    let j = (l - tier.start) * s.neurons + k;
                    let conn = &tier.conn[j * s.bits as usize..(j + 1) * s.bits as usize];
                    let addr = conn.iter().fold(0u64, |a, &c| (a << 1) | row[c as usize] as u64);
                    let stored = if key_bits < s.bits { _core::store::lsh_fold(addr, s.bits) } else { addr };
                    let cell = cells.entry((j as u64, stored)).or_insert(state);
                    if state == 1 {
                        *cell = 1; // public TRUE
                    }
                }
            };
            touch(d.targets[e], 1);
            for &n in negs {
                touch(n, 0);
            }
        }
        out.push(cells);
    }
    out
}

#[test]
fn training_matches_the_definition_for_every_backend() {
    let c = 12;
    let d = data(1, 400, 40, c, 35);
    let negs = [0i64, 3, 7];
    let order: Vec<i64> = vec![5, 2, 11, 0, 1, 3, 4, 6, 7, 8, 9, 10];
    for backends in [["auto", "auto", "auto"], ["dense", "sparse", "lsh"], ["sparse", "dense", "lsh"]] {
        let mut m = mem(&specs(), 40, &backends, Some(&order));
        m.train(Input::Bits(&d.bits), 400, &d.targets, Negatives::Shared(&negs)).unwrap();
        let want = brute_force(&m, &d, &negs);
        for (ti, w) in want.iter().enumerate() {
            let got: HashMap<(u64, u64), u8> = m
                .cells(ti)
                .unwrap()
                .into_iter()
                .map(|(j, a, s)| ((j, a), _core::store::to_public(s)))
                .collect();
            assert_eq!(&got, w, "tier {ti} backends {backends:?}");
        }
    }
}

#[test]
fn order_batching_and_threads_do_not_matter() {
    let c = 12;
    let d = data(2, 3000, 40, c, 50);
    let negs: Vec<i64> = (0..3000 * 2).map(|i| (i * 7 % c) as i64).collect();
    let neg = Negatives::PerExample { ids: &negs, k: 2 };
    _core::pool::set_num_threads(1).unwrap();
    let mut a = mem(&specs(), 40, &["auto"; 3], None);
    a.train(Input::Bits(&d.bits), 3000, &d.targets, neg).unwrap();
    _core::pool::set_num_threads(4).unwrap();
    let mut b = mem(&specs(), 40, &["auto"; 3], None);
    // reversed batches of 700
    let mut start: usize = 3000;
    while start > 0 {
        let s = start.saturating_sub(700);
        let part = Negatives::PerExample { ids: &negs[s * 2..start * 2], k: 2 };
        b.train(Input::Bits(&d.bits[s * 40..start * 40]), start - s, &d.targets[s..start], part).unwrap();
        start = s;
    }
    assert_eq!(a.to_bytes(), b.to_bytes());
}

#[test]
fn dense_and_sparse_give_the_same_forward() {
    let d = data(3, 500, 40, 8, 40);
    let negs = [1i64, 2];
    let mut a = mem(&specs()[..2], 40, &["dense", "dense"], None);
    let mut b = mem(&specs()[..2], 40, &["sparse", "sparse"], None);
    for m in [&mut a, &mut b] {
        m.train(Input::Bits(&d.bits), 500, &d.targets, Negatives::Shared(&negs)).unwrap();
    }
    let q = data(4, 100, 40, 8, 40);
    assert_eq!(a.forward_counts(Input::Bits(&q.bits), 100).unwrap(), b.forward_counts(Input::Bits(&q.bits), 100).unwrap());
    assert_eq!(a.cell_counts(), b.cell_counts());
    let (ce_a, p_a) = a.evaluate(Input::Bits(&q.bits), 100, &q.targets, 0.5).unwrap();
    let (ce_b, p_b) = b.evaluate(Input::Bits(&q.bits), 100, &q.targets, 0.5).unwrap();
    assert_eq!(ce_a, ce_b);
    assert_eq!(p_a, p_b);
}

#[test]
fn save_load_roundtrip_and_corruption() {
    let d = data(5, 300, 40, 12, 30);
    let mut m = mem(&specs(), 40, &["auto"; 3], None);
    m.train(Input::Bits(&d.bits), 300, &d.targets, Negatives::Shared(&[4])).unwrap();
    let bytes = m.to_bytes();
    let back = TieredMemory::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.cell_counts(), m.cell_counts());
    for cut in [0, 7, 8, 40, bytes.len() - 1] {
        assert!(TieredMemory::from_bytes(&bytes[..cut]).is_err());
    }
    let mut r = SplitMix64::new(9);
    for _ in 0..300 {
        let mut x = bytes.clone();
        let p = r.below(x.len() as u64) as usize;
        x[p] = r.below(256) as u8;
        let _ = TieredMemory::from_bytes(&x); // Ok or Err, never a panic
    }
}

#[test]
fn candidates_equal_direct_training() {
    let d = data(6, 400, 40, 12, 40);
    let q = data(7, 80, 40, 12, 40);
    let m = mem(&specs(), 40, &["auto"; 3], None);
    let g = m.connection_count();
    let mut r = SplitMix64::new(1);
    let mut cands: Vec<i64> = m.connectivity_flat().iter().map(|&x| x as i64).collect();
    cands.extend((0..g).map(|_| r.below(40) as i64));
    let negs = [0i64, 5];
    let got = m
        .evaluate_candidates(&cands, 2, &d.bits, &d.targets, Negatives::Shared(&negs), &q.bits, &q.targets, 0.0, false)
        .unwrap();
    for k in 0..2 {
        let mut fresh = mem(&specs(), 40, &["auto"; 3], None);
        fresh.set_connectivity_flat(&cands[k * g..(k + 1) * g]).unwrap();
        fresh.train(Input::Bits(&d.bits), 400, &d.targets, Negatives::Shared(&negs)).unwrap();
        let (ce, _) = fresh.evaluate(Input::Bits(&q.bits), 80, &q.targets, 0.0).unwrap();
        assert_eq!(got[k], ce.iter().sum::<f64>() / 80.0);
    }
    assert_eq!(m.cell_counts().iter().map(|c| c.0 + c.1).sum::<u64>(), 0);
}

#[test]
fn bad_input_is_an_error() {
    let mut m = mem(&specs(), 40, &["auto"; 3], None);
    let d = data(8, 10, 40, 12, 50);
    assert!(m.train(Input::Bits(&d.bits[..39]), 10, &d.targets, Negatives::None).is_err());
    let mut twos = d.bits.clone();
    twos[5] = 2;
    assert!(m.train(Input::Bits(&twos), 10, &d.targets, Negatives::None).is_err());
    assert!(m.train(Input::Bits(&d.bits), 10, &d.targets[..9], Negatives::None).is_err());
    let mut bad_t = d.targets.clone();
    bad_t[0] = 12;
    assert!(m.train(Input::Bits(&d.bits), 10, &bad_t, Negatives::None).is_err());
    bad_t[0] = -1;
    assert!(m.train(Input::Bits(&d.bits), 10, &bad_t, Negatives::None).is_err());
    assert!(m.train(Input::Bits(&d.bits), 10, &d.targets, Negatives::Shared(&[99])).is_err());
    assert!(m.train(Input::Bits(&d.bits), 10, &d.targets, Negatives::PerExample { ids: &[0; 7], k: 1 }).is_err());
    assert!(m.forward_scores(Input::Bits(&d.bits), 10, f64::NAN).is_err());
    assert_eq!(m.cell_counts().iter().map(|c| c.0 + c.1).sum::<u64>(), 0);
    let names = vec!["auto".to_string()];
    let bad_bits = [TierSpec { count: 2, neurons: 1, bits: 0 }];
    assert!(TieredMemory::new(&bad_bits, 8, None, None, &names, 0).is_err());
    let bad_conn = [TierSpec { count: 1, neurons: 1, bits: 2 }];
    assert!(TieredMemory::new(&bad_conn, 8, Some(vec![vec![0, 8]]), None, &names, 0).is_err());
    assert!(TieredMemory::new(&bad_conn, 8, Some(vec![vec![0]]), None, &names, 0).is_err());
    assert!(TieredMemory::new(&bad_conn, 8, None, Some(&[1]), &names, 0).is_err());
    assert!(parse_tier_spec("5,1,1;rest,1,1", 3).is_err());
}
