//! `discovery.k8s.io/v1 EndpointSlice`: the endpoints of a Service, read
//! and checked from the object as `kubectl get -o json` prints it.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::Value;

use super::{
    describe, dns_label, invalid, label, read_meta, read_protocol, require_api_version,
    unsupported, At, FResult, K8sError, Protocol,
};
use crate::objects::Kind;

/// The label that ties a slice to its Service (`discovery.LabelServiceName`).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A checked `discovery.k8s.io/v1 EndpointSlice` (`addressType: IPv4`).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSlice {
    value: Value,
    namespace: String,
    name: String,
    service_name: String,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
}

/// One of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointPort {
    /// `name`; empty when absent (the API server's default), matching an
    /// unnamed Service port.
    pub name: String,
    /// `protocol` (default TCP).
    pub protocol: Protocol,
    /// `port`; `None` when absent (kube-proxy ignores such a port).
    pub port: Option<u16>,
}

/// One of `endpoints`, with its conditions defaulted as the API reference
/// says (k8s.io/api discovery/v1/types.go, `EndpointConditions`: "ready
/// ... A nil value should be interpreted as "true"", "serving ... A nil
/// value should be interpreted as "true"", "terminating ... A nil value
/// should be interpreted as "false""; kube-proxy's endpointslicecache.go
/// reads them the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// `addresses[0]` (kube-proxy does not look at the others).
    pub address: IpAddr,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `conditions.ready` (absent: true).
    pub ready: bool,
    /// `conditions.serving` (absent: true).
    pub serving: bool,
    /// `conditions.terminating` (absent: false).
    pub terminating: bool,
}

impl EndpointSlice {
    /// Reads and checks an EndpointSlice.
    pub fn from_value(value: Value) -> Result<EndpointSlice, K8sError> {
        let root = At::root(&value);
        let read = || -> FResult<_> {
            root.object()?;
            require_api_version(&root, Kind::EndpointSlice)?;
            let (namespace, name) = read_meta(&root)?;
            let service_name = match label(&root, SERVICE_NAME_LABEL)? {
                Some(s) if !s.is_empty() => s.to_owned(),
                _ => {
                    return Err(invalid(
                        &format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"),
                        "is missing: the slice would belong to no Service",
                    ))
                }
            };
            read_address_type(&root)?;
            let ports = read_ports(&root)?;
            let endpoints = read_endpoints(&root)?;
            Ok((namespace, name, service_name, ports, endpoints))
        };
        match read() {
            Ok((namespace, name, service_name, ports, endpoints)) => Ok(EndpointSlice {
                value,
                namespace,
                name,
                service_name,
                ports,
                endpoints,
            }),
            Err(e) => Err(e.into_k8s(describe(&value))),
        }
    }

    /// The Service it belongs to (label `kubernetes.io/service-name`), in
    /// [`EndpointSlice::namespace`].
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// `metadata.namespace` (`default` when absent).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ports`.
    pub fn ports(&self) -> &[EndpointPort] {
        &self.ports
    }

    /// `endpoints`.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The object as given (`null` after [`Self::into_typed`]).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object as given, taken.
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The typed fields alone, without the JSON it was read from: for
    /// holders of many objects (a node agent's view of every Service)
    /// that need only what twill implements.
    pub fn into_typed(mut self) -> Self {
        self.value = Value::Null;
        self
    }
}

fn read_address_type(root: &At<'_>) -> FResult<()> {
    match root.opt_str("addressType")? {
        Some("IPv4") => Ok(()),
        Some(t @ ("IPv6" | "FQDN")) => Err(unsupported(
            "addressType",
            format_args!("{t} is not supported (twill's pod network is IPv4)"),
        )),
        Some(t) => Err(invalid(
            "addressType",
            format_args!("{t:?} is not IPv4, IPv6 or FQDN"),
        )),
        None => Err(invalid("addressType", "is missing")),
    }
}

fn read_ports(root: &At<'_>) -> FResult<Vec<EndpointPort>> {
    let mut ports = Vec::new();
    let mut names = HashSet::new();
    for item in root.opt_items("ports")? {
        item.object()?;
        let name = item.opt_str("name")?.unwrap_or_default();
        if !name.is_empty() && !dns_label(name) {
            return Err(invalid(
                &item.join("name"),
                format_args!("{name:?} is not a DNS label"),
            ));
        }
        if !names.insert(name) {
            return Err(invalid(
                &item.join("name"),
                format_args!("{name:?} is used by two ports"),
            ));
        }
        let protocol = read_protocol(&item)?;
        let port = item.get("port").map(|p| p.port()).transpose()?;
        ports.push(EndpointPort {
            name: name.to_owned(),
            protocol,
            port,
        });
    }
    Ok(ports)
}

fn read_endpoints(root: &At<'_>) -> FResult<Vec<Endpoint>> {
    let mut endpoints = Vec::new();
    for item in root.opt_items("endpoints")? {
        item.object()?;
        let addresses = item.opt_items("addresses")?;
        let first = addresses
            .first()
            .ok_or_else(|| invalid(&item.join("addresses"), "needs at least one address"))?;
        let s = first.str()?;
        let address: IpAddr = s
            .parse()
            .map_err(|_| invalid(&first.path, format_args!("{s:?} is not an IP address")))?;
        if address.is_ipv6() {
            return Err(invalid(
                &first.path,
                format_args!("{address} is IPv6 in a slice of addressType IPv4"),
            ));
        }
        let node_name = item.opt_str("nodeName")?.map(str::to_owned);
        let cond = item.get("conditions");
        let flag = |key: &str| -> FResult<Option<bool>> {
            cond.as_ref()
                .and_then(|c| c.get(key))
                .map(|b| b.bool())
                .transpose()
        };
        let ready = flag("ready")?.unwrap_or(true);
        let serving = flag("serving")?.unwrap_or(true);
        let terminating = flag("terminating")?.unwrap_or(false);
        endpoints.push(Endpoint {
            address,
            node_name,
            ready,
            serving,
            terminating,
        });
    }
    Ok(endpoints)
}

#[cfg(test)]
#[path = "endpointslice_tests.rs"]
mod tests;
