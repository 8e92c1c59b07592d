//! Kubernetes manifests for a node's `objects_dir`: a `v1 Service` and its
//! `discovery.k8s.io/v1 EndpointSlice`, a `v1 Namespace` and a `v1 Pod`
//! (labels, node, named container ports) in the shapes `kubectl get -o
//! json` prints, written into the directory by rename (the agent polls it
//! and must never read a half-written file). Used by `twill bench`'s
//! `twill-vxlan-svc` and `twill-vxlan-pol` and by `twill bench-services`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// One port of a Service and the matching EndpointSlice port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcPort {
    /// Port name (unique within the Service; the slice's port has the same).
    pub name: &'static str,
    /// `"TCP"` or `"UDP"`.
    pub protocol: &'static str,
    /// The Service's port (on the ClusterIP).
    pub port: u16,
    /// The endpoints' port.
    pub target_port: u16,
}

/// One endpoint: its address and the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcEndpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// `nodeName`.
    pub node: String,
}

/// A ClusterIP Service `namespace/name` on `cluster_ip` with `ports`.
pub fn service(namespace: &str, name: &str, cluster_ip: Ipv4Addr, ports: &[SvcPort]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({ "name": p.name, "port": p.port, "protocol": p.protocol,
                    "targetPort": p.target_port })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "ports": ports,
        },
    })
}

/// The EndpointSlice `<service>-1` of Service `namespace/service`: every
/// endpoint ready, on every port of `ports` (its target port).
pub fn endpoint_slice(
    namespace: &str,
    service: &str,
    ports: &[SvcPort],
    endpoints: &[SvcEndpoint],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({ "name": p.name, "port": p.target_port, "protocol": p.protocol }))
        .collect();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            json!({ "addresses": [e.ip.to_string()],
                    "conditions": { "ready": true, "serving": true, "terminating": false },
                    "nodeName": e.node })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"),
            "namespace": namespace,
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    })
}

/// A `v1 Namespace` with `labels` (and the `kubernetes.io/metadata.name`
/// label the API server puts on every namespace).
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/metadata.name".into(), name.into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": l },
    })
}

/// A `v1 Pod` `namespace/name` on `node` with `labels` and one container
/// whose ports are `ports` (each under its name, on its target port). No
/// `status`: the agents publish the addresses of the pods attached to them.
pub fn pod(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    node: &str,
    ports: &[SvcPort],
) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({ "name": p.name, "containerPort": p.target_port, "protocol": p.protocol }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "server", "image": "iperf3", "ports": ports }],
        },
    })
}

/// `objects` as one `kind: List` document (what `kubectl get a,b -o json`
/// prints).
pub fn list(objects: Vec<Value>) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "items": objects })
}

/// Writes `doc` to `dir/file` through a hidden temporary file and a rename,
/// so that a poll of the directory sees the old file or the new one, never
/// half of one (hidden files are not read as manifests).
pub fn write(dir: &Path, file: &str, doc: &Value) -> Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    let path = dir.join(file);
    fs::write(&tmp, serde_json::to_vec(doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: [SvcPort; 2] = [
        SvcPort {
            name: "iperf",
            protocol: "TCP",
            port: 5201,
            target_port: 5201,
        },
        SvcPort {
            name: "iperf-udp",
            protocol: "UDP",
            port: 5201,
            target_port: 5202,
        },
    ];

    #[test]
    fn service_has_kubectls_shape() {
        let s = service("default", "bench", Ipv4Addr::new(10, 96, 0, 10), &PORTS);
        assert_eq!(s["kind"], "Service");
        assert_eq!(s["metadata"]["namespace"], "default");
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(
            s["spec"]["ports"][1],
            json!({ "name": "iperf-udp", "port": 5201, "protocol": "UDP", "targetPort": 5202 })
        );
    }

    #[test]
    fn slice_names_its_service_and_uses_target_ports() {
        let eps = [SvcEndpoint {
            ip: Ipv4Addr::new(10, 244, 2, 3),
            node: "node-b".into(),
        }];
        let e = endpoint_slice("default", "bench", &PORTS, &eps);
        assert_eq!(e["metadata"]["name"], "bench-1");
        assert_eq!(
            e["metadata"]["labels"]["kubernetes.io/service-name"],
            "bench"
        );
        assert_eq!(e["ports"][1]["port"], 5202);
        assert_eq!(e["ports"][1]["name"], "iperf-udp");
        assert_eq!(e["endpoints"][0]["addresses"], json!(["10.244.2.3"]));
        assert_eq!(e["endpoints"][0]["nodeName"], "node-b");
    }

    #[test]
    fn namespace_carries_the_api_servers_name_label() {
        let n = namespace("bench", &[("team", "x")]);
        assert_eq!(n["kind"], "Namespace");
        assert_eq!(
            n["metadata"]["labels"],
            json!({ "kubernetes.io/metadata.name": "bench", "team": "x" })
        );
    }

    #[test]
    fn pod_names_its_container_ports_and_node() {
        let p = pod("bench", "b", &[("app", "b")], "node-b", &PORTS);
        assert_eq!(p["kind"], "Pod");
        assert_eq!(p["metadata"]["labels"], json!({ "app": "b" }));
        assert_eq!(p["spec"]["nodeName"], "node-b");
        assert_eq!(
            p["spec"]["containers"][0]["ports"][1],
            json!({ "name": "iperf-udp", "containerPort": 5202, "protocol": "UDP" })
        );
        assert!(p.get("status").is_none());
    }

    #[test]
    fn write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("twill-manifests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        write(&dir, "a.json", &list(vec![json!({"x": 1})])).unwrap();
        write(&dir, "a.json", &list(vec![json!({"x": 2})])).unwrap();
        let v: Value = serde_json::from_slice(&fs::read(dir.join("a.json")).unwrap()).unwrap();
        assert_eq!(v["items"][0]["x"], 2);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
