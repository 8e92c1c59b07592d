//! flannel's net-conf.json (`control::netconf`) and lease values
//! (`control::LeaseAttrs`), Go-style JSON read as flannel reads it.
//!
//! Checked: a parsed net-conf satisfies its stated invariants
//! (`validate`, SubnetMin/SubnetMax are leasable subnets, the subnet
//! count is the iterator's length and its first item is SubnetMin) and
//! reads back the same from `to_json` and from its serde form; a parsed
//! lease value reads back the same from `to_json`.
#![no_main]

use control::{LeaseAttrs, NetConf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = NetConf::parse(&text) {
        c.validate().expect("a parsed net-conf validates");
        assert!(c.contains_subnet(&c.subnet_min) && c.contains_subnet(&c.subnet_max));
        let n = c.subnet_count();
        assert!(n >= 1);
        let mut it = c.subnets();
        assert_eq!(it.len() as u64, n);
        assert_eq!(it.next(), Some(c.subnet_min));
        assert_eq!(NetConf::parse(&c.to_json()).expect("to_json reads back"), c);
        let s = serde_json::to_string(&c).expect("serialize");
        assert_eq!(
            serde_json::from_str::<NetConf>(&s).expect("serde reads back"),
            c
        );
    }
    if let Ok(a) = LeaseAttrs::parse(&text) {
        assert_eq!(
            LeaseAttrs::parse(&a.to_json()).expect("to_json reads back"),
            a
        );
    }
});
