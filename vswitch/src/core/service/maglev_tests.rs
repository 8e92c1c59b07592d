use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

fn backends(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            SocketAddr::from((
                Ipv4Addr::new(10, 244, (i / 250) as u8 + 1, (i % 250) as u8 + 3),
                8080,
            ))
        })
        .collect()
}

fn shares(m: &Maglev, n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &s in m.slots() {
        c[usize::from(s)] += 1;
    }
    c
}

#[test]
fn every_slot_is_filled_with_a_backend() {
    for n in [1, 2, 3, 10, 100] {
        let m = Maglev::new(&backends(n), size_for(n)).unwrap();
        assert!(m.slots().iter().all(|&s| usize::from(s) < n), "n = {n}");
    }
}

#[test]
fn no_backends_no_table() {
    assert!(Maglev::new(&[], 251).is_none());
}

#[test]
fn sizes_grow_with_the_backends() {
    assert_eq!(size_for(1), 251);
    assert_eq!(size_for(10), 1021);
    assert_eq!(size_for(100), 16381);
    assert_eq!(size_for(10_000), 65537);
}

#[test]
fn same_backends_same_table_whatever_built_it() {
    let a = Maglev::new(&backends(7), 1021).unwrap();
    let b = Maglev::new(&backends(7), 1021).unwrap();
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The paper's balance: with 65537 slots every backend owns its
    /// share within 1 %.
    #[test]
    fn balance_within_one_percent_at_65537_slots(n in 2usize..=50) {
        let m = Maglev::new(&backends(n), 65537).unwrap();
        let ideal = 65537.0 / n as f64;
        for (i, c) in shares(&m, n).into_iter().enumerate() {
            let off = (c as f64 - ideal).abs() / ideal;
            prop_assert!(off <= 0.01, "backend {i} of {n}: {c} slots, ideal {ideal:.1}");
        }
    }

    /// Removing one of N backends moves its own slots and few others: at
    /// most about 1/N of the table (the paper's figure 11 bound, with a
    /// margin of a fifth for small tables).
    #[test]
    fn removing_one_of_n_moves_about_one_nth(n in 3usize..=40, gone in 0usize..40) {
        let gone = gone % n;
        let all = backends(n);
        let before = Maglev::new(&all, 65537).unwrap();
        let mut rest = all.clone();
        rest.remove(gone);
        let after = Maglev::new(&rest, 65537).unwrap();
        let moved = before
            .slots()
            .iter()
            .zip(after.slots())
            .filter(|(&b, &a)| all[usize::from(b)] != rest[usize::from(a)])
            .count();
        let bound = 65537.0 / n as f64 * 1.2 + 65537.0 * 0.01;
        prop_assert!((moved as f64) <= bound, "{moved} of 65537 moved removing 1 of {n} (bound {bound:.0})");
    }
}

#[test]
fn flow_hash_depends_on_every_field() {
    let a = SocketAddr::from((Ipv4Addr::new(10, 244, 1, 3), 40000));
    let v = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 80));
    let h = flow_hash(6, a, v);
    assert_ne!(h, flow_hash(17, a, v));
    assert_ne!(
        h,
        flow_hash(
            6,
            SocketAddr::from((Ipv4Addr::new(10, 244, 1, 3), 40001)),
            v
        )
    );
    assert_ne!(
        h,
        flow_hash(6, a, SocketAddr::from((Ipv4Addr::new(10, 96, 0, 11), 80)))
    );
    assert_ne!(
        h,
        flow_hash(6, a, SocketAddr::from((Ipv4Addr::new(10, 96, 0, 10), 81)))
    );
}
