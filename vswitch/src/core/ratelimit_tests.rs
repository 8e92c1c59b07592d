//! Token buckets and the ICMP limiter on an explicit clock.

use super::*;

#[test]
fn a_bucket_gives_its_burst_then_its_rate() {
    let b = TokenBucket::new(10, 5);
    let taken = (0..20).filter(|_| b.take(1000)).count();
    assert_eq!(taken, 5, "the burst");
    assert!(!b.take(1050), "half a token after 50 ms");
    assert!(b.take(1100), "one after 100 ms");
    assert!(!b.take(1100));
    // A second later: ten more, never more than the burst.
    let taken = (0..20).filter(|_| b.take(2100)).count();
    assert_eq!(taken, 5);
}

#[test]
fn fractions_of_a_token_add_up_across_refusals() {
    let b = TokenBucket::new(1, 1);
    assert!(b.take(0));
    // Asked every 100 ms: exactly one token per second comes out.
    let got = (1..=30).filter(|i| b.take(i * 100)).count();
    assert_eq!(got, 3);
}

#[test]
fn icmp_errors_are_limited_per_destination_as_linux_does() {
    let l = IcmpLimiter::new(IcmpLimits::default());
    let (victim, other) = (Ipv4Addr::new(192, 0, 2, 9), Ipv4Addr::new(192, 0, 2, 10));
    let sent = (0..1000).filter(|_| l.allow(victim, true, 5000)).count();
    assert_eq!(sent, 6, "a burst of 6");
    assert!(!l.allow(victim, true, 5500));
    assert!(l.allow(victim, true, 6000), "then one per second");
    assert!(l.allow(other, true, 6000), "each destination its own");
    // Fragmentation needed is exempt from the per-destination limit.
    assert!(l.allow(victim, false, 6000));
}

#[test]
fn the_node_wide_cap_holds_across_destinations() {
    let l = IcmpLimiter::new(IcmpLimits::default());
    let sent = (0..10_000u32)
        .filter(|i| l.allow(Ipv4Addr::from(0xc000_0200 + i % 4000), true, 10_000))
        .count();
    assert_eq!(sent, 50, "icmp_msgs_burst");
    let sent = (0..10_000u32)
        .filter(|i| l.allow(Ipv4Addr::from(0xc100_0000 + i % 4000), true, 11_000))
        .count();
    assert!(
        (45..=55).contains(&sent),
        "about icmp_msgs_per_sec… capped by the burst: {sent}"
    );
}

#[test]
fn a_full_destination_table_suppresses_new_destinations() {
    let l = IcmpLimiter::new(IcmpLimits {
        max_dests: 2,
        global_burst: 1000,
        ..IcmpLimits::default()
    });
    let d = |i: u8| Ipv4Addr::new(192, 0, 2, i);
    assert!(l.allow(d(1), true, 0));
    assert!(l.allow(d(2), true, 0));
    assert!(
        !l.allow(d(3), true, 0),
        "full, and no bucket is full again yet"
    );
    // 6 s later the first two have refilled and are forgotten.
    assert!(l.allow(d(3), true, 6000));
}
