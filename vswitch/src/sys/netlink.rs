//! Synchronous rtnetlink helpers: look up, configure, move and delete links,
//! add addresses and IPv4 routes. Never shells out to `ip`.
//!
//! A [`Netlink`] session is a current-thread tokio runtime plus one rtnetlink
//! connection. The netlink socket belongs to the network namespace of the
//! thread that created the session, so to act inside a namespace create it
//! (or call the free functions, which make a session per call) inside
//! [`NetNs::run`]. Do not call these from inside a tokio runtime (they block);
//! that is reported as an error, not a panic. No forwarding rules here.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use encap::MacAddr;
use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlag, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use super::netns::NetNs;

/// What went wrong talking to the kernel's routing netlink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The kernel refused or the request failed; see [`NetlinkError::errno`].
    #[error("{op}: {source}")]
    Request {
        op: String,
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// No link by that name in the session's namespace.
    #[error("no link named {0:?}")]
    NoSuchLink(String),
    /// The target name is taken in the target namespace.
    #[error("a link named {name:?} already exists in {ns}")]
    LinkExists { name: String, ns: String },
    /// A bad argument, caught before asking the kernel.
    #[error("{0}")]
    Invalid(String),
    /// Runtime, socket or thread set-up failed, or a namespace could not be
    /// entered.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The errno the kernel answered with, if that is what happened.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => errno_of(source),
            NetlinkError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Result of this module.
pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request {
        op,
        source: Box::new(source),
    }
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Io { op, source }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// How [`configure_link`] sets a link up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkConfig {
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// IPv4 addresses with prefix lengths, added (or replaced, if present).
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Set the link up after the rest.
    pub up: bool,
}

/// A link as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// None for links without a 6-byte hardware address (e.g. `lo` has
    /// one, all zero; tunnels may have none).
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteV4 {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// `RTNH_F_ONLINK`: the gateway is on the link even if no address says
    /// so (as flannel's vxlan routes).
    pub onlink: bool,
    /// Who installed it (`ip route`'s `proto`; `RTPROT_*`). Adding with 0
    /// leaves rtnetlink's default, `static`.
    pub protocol: u8,
}

/// A netlink session in the namespace of the thread that made it.
#[derive(Debug)]
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Netlink> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(NetlinkError::Invalid(
                "sys::netlink blocks: call it outside the tokio runtime (spawn_blocking)".into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(io_err("tokio runtime"))?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            Ok::<_, io::Error>(handle)
        });
        let handle = handle.map_err(io_err("netlink socket"))?;
        Ok(Netlink { rt, handle })
    }

    fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(NetlinkError::Invalid(
                "sys::netlink blocks: call it outside the tokio runtime (spawn_blocking)".into(),
            ));
        }
        Ok(self.rt.block_on(f))
    }

    /// The link named `name`, if there is one.
    pub fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        check_name(name)?;
        let get = self.handle.link().get().match_name(name.to_owned());
        self.get_one_link(get, format!("get link {name}"))
    }

    /// The link with index `index`, if there is one.
    pub fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>> {
        let get = self.handle.link().get().match_index(index);
        self.get_one_link(get, format!("get link #{index}"))
    }

    fn get_one_link(&self, get: rtnetlink::LinkGetRequest, op: String) -> Result<Option<LinkInfo>> {
        let r = self.block_on(async { get.execute().try_next().await })?;
        match r {
            Ok(Some(msg)) => Ok(Some(link_info(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(req(op)(e)),
        }
    }

    /// Every link of the namespace.
    pub fn links(&self) -> Result<Vec<LinkInfo>> {
        let get = self.handle.link().get();
        let msgs: Vec<LinkMessage> = self
            .block_on(get.execute().try_collect())?
            .map_err(req("dump links"))?;
        Ok(msgs.iter().map(link_info).collect())
    }

    /// The index of the link named `name`, if there is one.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    fn index_of(&self, name: &str) -> Result<u32> {
        self.link_index(name)?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_owned()))
    }

    /// Sets the link named `name` up; returns its index.
    pub fn set_link_up(&self, name: &str) -> Result<u32> {
        let index = self.index_of(name)?;
        let set = self.handle.link().set(index).up();
        self.block_on(set.execute())?
            .map_err(req(format!("set {name} up")))?;
        Ok(index)
    }

    /// Sets MAC and MTU, adds the addresses, then sets the link up, as `cfg`
    /// says. Returns the link's index.
    pub fn configure_link(&self, name: &str, cfg: &LinkConfig) -> Result<u32> {
        let index = self.index_of(name)?;
        if cfg.mac.is_some() || cfg.mtu.is_some() {
            let mut set = self.handle.link().set(index);
            if let Some(mac) = cfg.mac {
                set = set.address(mac.0.to_vec());
            }
            if let Some(mtu) = cfg.mtu {
                set = set.mtu(mtu);
            }
            self.block_on(set.execute())?.map_err(req(format!(
                "set {name} address/mtu {:?}/{:?}",
                cfg.mac, cfg.mtu
            )))?;
        }
        for &(addr, prefix_len) in &cfg.addrs {
            self.add_address_v4(index, addr, prefix_len)?;
        }
        if cfg.up {
            let set = self.handle.link().set(index).up();
            self.block_on(set.execute())?
                .map_err(req(format!("set {name} up")))?;
        }
        Ok(index)
    }

    /// Adds `addr/prefix_len` to link `index`, or replaces it if present.
    pub fn add_address_v4(&self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        if prefix_len > 32 {
            return Err(NetlinkError::Invalid(format!(
                "address {addr}/{prefix_len}: prefix longer than 32"
            )));
        }
        let add = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .replace();
        self.block_on(add.execute())?.map_err(req(format!(
            "add address {addr}/{prefix_len} to link #{index}"
        )))
    }

    /// The IPv4 addresses of link `index`.
    pub fn addresses_v4(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        let get = self.handle.address().get().set_link_index_filter(index);
        let msgs: Vec<AddressMessage> = self
            .block_on(get.execute().try_collect())?
            .map_err(req(format!("dump addresses of link #{index}")))?;
        Ok(msgs
            .iter()
            .filter_map(|m| local_v4(m).map(|a| (a, m.header.prefix_len)))
            .collect())
    }

    /// Adds an IPv4 route to the main table, or replaces the one with the
    /// same destination (as `ip route replace`). Without a gateway the route
    /// has link scope. `dst` must have no host bits set.
    pub fn add_route_v4(&self, route: &RouteV4) -> Result<()> {
        self.add_route(route, true)
    }

    /// Adds an IPv4 route to the main table unless one to the same
    /// destination exists (`EEXIST` then, as `ip route add`).
    pub fn create_route_v4(&self, route: &RouteV4) -> Result<()> {
        self.add_route(route, false)
    }

    fn add_route(&self, route: &RouteV4, replace: bool) -> Result<()> {
        let RouteV4 {
            dst,
            prefix_len,
            gateway,
            oif,
            onlink,
            protocol,
        } = *route;
        check_prefix(dst, prefix_len)?;
        if gateway.is_none() && oif.is_none() {
            return Err(NetlinkError::Invalid(format!(
                "route {dst}/{prefix_len}: needs a gateway or an output interface"
            )));
        }
        let mut add = self
            .handle
            .route()
            .add()
            .v4()
            .destination_prefix(dst, prefix_len);
        if replace {
            add = add.replace();
        }
        if protocol != 0 {
            add = add.protocol(RouteProtocol::from(protocol));
        }
        if let Some(gw) = gateway {
            add = add.gateway(gw);
        } else {
            add = add.scope(RouteScope::Link);
        }
        if let Some(oif) = oif {
            add = add.output_interface(oif);
        }
        if onlink {
            add.message_mut().header.flags.push(RouteFlag::Onlink);
        }
        self.block_on(add.execute())?
            .map_err(req(format!("add route {route:?}")))
    }

    /// Deletes the main-table IPv4 route to `dst/prefix_len` (whatever its
    /// gateway and interface).
    pub fn delete_route_v4(&self, dst: Ipv4Addr, prefix_len: u8) -> Result<()> {
        check_prefix(dst, prefix_len)?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        // NOWHERE and UNSPEC are the kernel's wildcards for a delete.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.kind = RouteType::Unspec;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let del = self.handle.route().del(msg);
        self.block_on(del.execute())?
            .map_err(req(format!("delete route {dst}/{prefix_len}")))
    }

    /// Deletes exactly `route` from the main table: its destination,
    /// gateway, interface and protocol must match, so that a route to the
    /// same destination that someone else installed is left alone.
    pub fn delete_exact_route_v4(&self, route: &RouteV4) -> Result<()> {
        check_prefix(route.dst, route.prefix_len)?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = route.prefix_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.scope = RouteScope::NoWhere;
        msg.header.kind = RouteType::Unspec;
        msg.header.protocol = RouteProtocol::from(route.protocol);
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(route.dst)));
        if let Some(gw) = route.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(oif) = route.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        let del = self.handle.route().del(msg);
        self.block_on(del.execute())?
            .map_err(req(format!("delete route {route:?}")))
    }

    /// The IPv4 addresses of every link: (link index, address, prefix
    /// length).
    pub fn all_addresses_v4(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
        let get = self.handle.address().get();
        let msgs: Vec<AddressMessage> = self
            .block_on(get.execute().try_collect())?
            .map_err(req("dump addresses"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| local_v4(m).map(|a| (m.header.index, a, m.header.prefix_len)))
            .collect())
    }

    /// The unicast IPv4 routes of the main table.
    pub fn routes_v4(&self) -> Result<Vec<RouteV4>> {
        let get = self.handle.route().get(IpVersion::V4);
        let msgs: Vec<RouteMessage> = self
            .block_on(get.execute().try_collect())?
            .map_err(req("dump IPv4 routes"))?;
        Ok(msgs.iter().filter_map(route_v4).collect())
    }

    /// Deletes link `index`.
    pub fn delete_link(&self, index: u32) -> Result<()> {
        let del = self.handle.link().del(index);
        self.block_on(del.execute())?
            .map_err(req(format!("delete link #{index}")))
    }

    /// Deletes the link named `name`.
    pub fn delete_link_by_name(&self, name: &str) -> Result<()> {
        let index = self.index_of(name)?;
        self.delete_link(index)
    }

    /// Moves link `index` from this session's namespace into `ns`, renamed
    /// to `new_name` in the same request (an empty `new_name` keeps the
    /// name). Fails with [`NetlinkError::LinkExists`] if `ns` already has a
    /// link named `new_name`.
    ///
    /// The kernel moves first and renames after, inside `ns`: if the name is
    /// taken there by then (a race with the check), the link ends up moved
    /// but not renamed, and the error says so.
    pub fn move_link_to_netns(&self, index: u32, ns: &NetNs, new_name: &str) -> Result<()> {
        let ns_name = ns.path().display().to_string();
        if !new_name.is_empty() {
            check_name(new_name)?;
            let taken = ns
                .run(|| link_index(new_name))
                .map_err(io_err(format!("enter {ns_name}")))??;
            if taken.is_some() {
                return Err(NetlinkError::LinkExists {
                    name: new_name.to_owned(),
                    ns: ns_name,
                });
            }
        }
        let mut set = self.handle.link().set(index).setns_by_fd(ns.as_raw_fd());
        if !new_name.is_empty() {
            set = set.name(new_name.to_owned());
        }
        let r = self.block_on(set.execute())?;
        let Err(e) = r else {
            return Ok(());
        };
        let moved = matches!(self.link_by_index(index), Ok(None));
        if moved && errno_of(&e) == Some(libc::EEXIST) {
            return Err(NetlinkError::LinkExists {
                name: new_name.to_owned(),
                ns: format!("{ns_name} (link #{index} was moved there but not renamed)"),
            });
        }
        let op = if moved {
            format!("move link #{index} to {ns_name}: moved, but rename to {new_name:?} failed")
        } else {
            format!("move link #{index} to {ns_name} as {new_name:?}")
        };
        Err(req(op)(e))
    }

    /// The MTU of the link holding the IPv4 address `ip` (as a local
    /// address), if any link does.
    pub fn mtu_of_link_with_address(&self, ip: Ipv4Addr) -> Result<Option<u32>> {
        let get = self.handle.address().get();
        let msgs: Vec<AddressMessage> = self
            .block_on(get.execute().try_collect())?
            .map_err(req("dump addresses"))?;
        let Some(index) = msgs
            .iter()
            .find(|m| local_v4(m) == Some(ip))
            .map(|m| m.header.index)
        else {
            return Ok(None);
        };
        Ok(self.link_by_index(index)?.and_then(|l| l.mtu))
    }
}

/// The local IPv4 address of an address message (`IFA_LOCAL`, or
/// `IFA_ADDRESS` when there is no `IFA_LOCAL`).
fn local_v4(m: &AddressMessage) -> Option<Ipv4Addr> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => return Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

fn link_info(m: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: m.header.index,
        name: String::new(),
        mtu: None,
        mac: None,
        up: m.header.flags.contains(&LinkFlag::Up),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name.clone_from(n),
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::Address(b) if b.len() == 6 => info.mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    info
}

fn route_v4(m: &RouteMessage) -> Option<RouteV4> {
    let h = &m.header;
    if h.address_family != AddressFamily::Inet || h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut r = RouteV4 {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: h.destination_prefix_length,
        gateway: None,
        oif: None,
        onlink: h.flags.contains(&RouteFlag::Onlink),
        protocol: u8::from(h.protocol),
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(r)
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0']) {
        return Err(NetlinkError::Invalid(format!(
            "bad interface name {name:?}: 1 to {} bytes, no NUL or '/'",
            libc::IFNAMSIZ - 1
        )));
    }
    Ok(())
}

fn check_prefix(dst: Ipv4Addr, prefix_len: u8) -> Result<()> {
    let host_bits = match prefix_len {
        0 => u32::MAX,
        1..=32 => !(u32::MAX << (32 - u32::from(prefix_len))),
        _ => {
            return Err(NetlinkError::Invalid(format!(
                "route {dst}/{prefix_len}: prefix longer than 32"
            )))
        }
    };
    if u32::from(dst) & host_bits != 0 {
        return Err(NetlinkError::Invalid(format!(
            "route {dst}/{prefix_len}: host bits set"
        )));
    }
    Ok(())
}

/// [`Netlink::move_link_to_netns`] in a one-off session.
pub fn move_link_to_netns(index: u32, ns: &NetNs, new_name: &str) -> Result<()> {
    Netlink::new()?.move_link_to_netns(index, ns, new_name)
}

/// [`Netlink::configure_link`] in a one-off session.
pub fn configure_link(name: &str, cfg: &LinkConfig) -> Result<u32> {
    Netlink::new()?.configure_link(name, cfg)
}

/// [`Netlink::add_route_v4`] in a one-off session: `dst` is (address,
/// prefix length).
pub fn add_route_v4(
    dst: (Ipv4Addr, u8),
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
    onlink: bool,
) -> Result<()> {
    Netlink::new()?.add_route_v4(&RouteV4 {
        dst: dst.0,
        prefix_len: dst.1,
        gateway,
        oif,
        onlink,
        protocol: 0,
    })
}

/// A default route via `gateway` (optionally pinned to `oif`), replacing
/// any default route of the main table.
pub fn add_default_route_v4(gateway: Ipv4Addr, oif: Option<u32>) -> Result<()> {
    add_route_v4((Ipv4Addr::UNSPECIFIED, 0), Some(gateway), oif, false)
}

/// [`Netlink::delete_route_v4`] in a one-off session.
pub fn delete_route_v4(dst: (Ipv4Addr, u8)) -> Result<()> {
    Netlink::new()?.delete_route_v4(dst.0, dst.1)
}

/// [`Netlink::routes_v4`] in a one-off session.
pub fn routes_v4() -> Result<Vec<RouteV4>> {
    Netlink::new()?.routes_v4()
}

/// [`Netlink::set_link_up`] in a one-off session (e.g. `"lo"` in a new
/// namespace).
pub fn set_link_up(name: &str) -> Result<u32> {
    Netlink::new()?.set_link_up(name)
}

/// [`Netlink::delete_link_by_name`] in a one-off session.
pub fn delete_link_by_name(name: &str) -> Result<()> {
    Netlink::new()?.delete_link_by_name(name)
}

/// [`Netlink::delete_link`] in a one-off session.
pub fn delete_link(index: u32) -> Result<()> {
    Netlink::new()?.delete_link(index)
}

/// [`Netlink::link_index`] in a one-off session.
pub fn link_index(name: &str) -> Result<Option<u32>> {
    Netlink::new()?.link_index(name)
}

/// [`Netlink::link`] in a one-off session.
pub fn link(name: &str) -> Result<Option<LinkInfo>> {
    Netlink::new()?.link(name)
}

/// [`Netlink::mtu_of_link_with_address`] in a one-off session.
pub fn mtu_of_link_with_address(ip: Ipv4Addr) -> Result<Option<u32>> {
    Netlink::new()?.mtu_of_link_with_address(ip)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "netlink_tests.rs"]
mod tests;
