//! Pods come and go for days on a node: the learning tables must hold as
//! much memory after 20,000 attachments and detachments as after 2,000.
//! (With papaya's default incremental resizing, a table churned by a few
//! writes a second kept every old table of its resizes: about 1 KB per pod
//! attached, found by `twill soak` and heaptrack; see `learning.rs`.)
//!
//! Live heap bytes are counted by this test binary's own allocator, so the
//! figure is exact and independent of the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use encap::MacAddr;
use vswitch::core::{MacTableConfig, PortId, SharedMacTable, SharedNeighbors};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, counting sizes only.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// What the agent does per pod: a new MAC on a reused port and address.
fn churn(macs: &SharedMacTable, neighbors: &SharedNeighbors, from: u32, n: u32) {
    let (port, ip) = (PortId(3), Ipv4Addr::new(10, 244, 1, 3));
    for i in from..from + n {
        let b = i.to_be_bytes();
        let mac = MacAddr([0x0a, 0x58, b[0], b[1], b[2], b[3]]);
        macs.insert_static(mac, port);
        neighbors.insert_fixed(ip, mac, Instant::now());
        macs.flush_port(port);
        neighbors.remove_if(ip, mac);
    }
}

#[test]
fn pod_churn_does_not_grow_the_learning_tables() {
    let macs = SharedMacTable::new(MacTableConfig::default());
    let neighbors = SharedNeighbors::new(8192, Duration::from_secs(300));
    churn(&macs, &neighbors, 0, 2_000);
    let after_warmup = LIVE.load(Relaxed);
    churn(&macs, &neighbors, 2_000, 18_000);
    let grown = LIVE.load(Relaxed) - after_warmup;
    assert!(
        grown < 256 * 1024,
        "the tables grew by {grown} bytes over 18,000 pod attachments"
    );
}
