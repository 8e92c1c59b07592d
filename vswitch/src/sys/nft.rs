//! NodePort steering: the nftables rules that hand traffic for this node's
//! NodePorts to the switch.
//!
//! A NodePort is reached at the node's own address, so the host kernel
//! receives it, not twill. One table, `ip twill`, programmed over netlink
//! (libnftnl), rewrites the destination of such packets to the switch's
//! gateway address and keeps the port:
//!
//! ```text
//! table ip twill {
//!   set tcp_nodeports { type inet_service; }
//!   set udp_nodeports { type inet_service; }
//!   chain prerouting { type nat hook prerouting priority dstnat;
//!     ip daddr <public_ip> meta l4proto tcp tcp dport @tcp_nodeports dnat ip to <gateway>
//!     ip daddr <public_ip> meta l4proto udp udp dport @udp_nodeports dnat ip to <gateway> }
//!   chain output { type nat hook output priority dstnat; (the same two rules) }
//! }
//! ```
//!
//! The host then routes the packet out of the host port to the gateway,
//! where the switch finds `<gateway>:<nodePort>` in its service table and
//! balances it; the host's conntrack undoes its half on the replies. The
//! rules are fixed; a NodePort added or removed is one set element, so a
//! change costs the same with 10 Services or 10,000.
//!
//! NodePorts answer on the node's public IP (kube-proxy's
//! `--nodeport-addresses=primary`), from outside (prerouting) and from the
//! node itself (output).

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;

use nftnl::expr::{Immediate, Nat, NatType, Register};
use nftnl::set::{Set, SetKey};
use nftnl::{nft_expr, Batch, Chain, FinalizedBatch, MsgType, ProtoFamily, Rule, Table};

/// The table's name.
pub const TABLE: &CStr = c"twill";
const TCP_SET: &CStr = c"tcp_nodeports";
const UDP_SET: &CStr = c"udp_nodeports";
/// `NF_IP_PRI_NAT_DST`: where DNAT happens (nft's `priority dstnat`).
const PRIORITY_DSTNAT: i32 = -100;

/// A port as an nftables set key (`inet_service`: 2 bytes, network order).
#[derive(Debug, Clone, Copy)]
struct Port(u16);

impl SetKey for Port {
    /// `TYPE_INET_SERVICE` in nftables' datatype enumeration.
    const TYPE: u32 = 13;
    const LEN: u32 = 2;

    fn data(&self) -> Box<[u8]> {
        Box::new(self.0.to_be_bytes())
    }
}

/// The installed table and the NodePorts in its sets.
#[derive(Debug)]
pub struct NodePortSteering {
    public_ip: Ipv4Addr,
    gateway: Ipv4Addr,
    tcp: BTreeSet<u16>,
    udp: BTreeSet<u16>,
}

impl NodePortSteering {
    /// Replaces any `ip twill` table (left by an agent that was killed)
    /// with an empty one steering `public_ip`'s NodePorts to `gateway`.
    pub fn install(public_ip: Ipv4Addr, gateway: Ipv4Addr) -> io::Result<NodePortSteering> {
        let table = Table::new(TABLE, ProtoFamily::Ipv4);
        let mut batch = Batch::new();
        // Add, delete, add: one transaction that works whether or not
        // the table existed, and leaves no moment without it.
        batch.add(&table, MsgType::Add);
        batch.add(&table, MsgType::Del);
        batch.add(&table, MsgType::Add);
        let tcp = Set::<Port>::new_named(TCP_SET, 1, &table, ProtoFamily::Ipv4);
        let udp = Set::<Port>::new_named(UDP_SET, 2, &table, ProtoFamily::Ipv4);
        batch.add(&tcp, MsgType::Add);
        batch.add(&udp, MsgType::Add);
        for name in [c"prerouting", c"output"] {
            let mut chain = Chain::new(name, &table);
            let hook = if name == c"output" {
                nftnl::Hook::Out
            } else {
                nftnl::Hook::PreRouting
            };
            chain.set_hook(hook, PRIORITY_DSTNAT);
            chain.set_type(nftnl::ChainType::Nat);
            batch.add(&chain, MsgType::Add);
            for (proto, set) in [(libc::IPPROTO_TCP, &tcp), (libc::IPPROTO_UDP, &udp)] {
                let mut rule = Rule::new(&chain);
                rule.add_expr(&nft_expr!(payload ipv4 daddr));
                rule.add_expr(&nft_expr!(cmp == public_ip));
                rule.add_expr(&nft_expr!(meta l4proto));
                rule.add_expr(&nft_expr!(cmp == proto as u8));
                if proto == libc::IPPROTO_TCP {
                    rule.add_expr(&nft_expr!(payload tcp dport));
                } else {
                    rule.add_expr(&nft_expr!(payload udp dport));
                }
                rule.add_expr(&nft_expr!(lookup set));
                rule.add_expr(&Immediate::new(gateway, Register::Reg1));
                rule.add_expr(&Nat {
                    nat_type: NatType::DNat,
                    family: ProtoFamily::Ipv4,
                    ip_register: Register::Reg1,
                    port_register: None,
                });
                batch.add(&rule, MsgType::Add);
            }
        }
        send(&batch.finalize())?;
        Ok(NodePortSteering {
            public_ip,
            gateway,
            tcp: BTreeSet::new(),
            udp: BTreeSet::new(),
        })
    }

    /// The node address NodePorts answer on.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// Where they are steered.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Makes the sets hold exactly these NodePorts (one transaction with
    /// the elements that changed).
    pub fn sync(&mut self, tcp: &BTreeSet<u16>, udp: &BTreeSet<u16>) -> io::Result<()> {
        if *tcp == self.tcp && *udp == self.udp {
            return Ok(());
        }
        let table = Table::new(TABLE, ProtoFamily::Ipv4);
        let mut batch = Batch::new();
        let diff = |name: &CStr, id: u32, want: &BTreeSet<u16>, have: &BTreeSet<u16>| {
            let mut add = Set::<Port>::new_named(name, id, &table, ProtoFamily::Ipv4);
            let mut del = Set::<Port>::new_named(name, id, &table, ProtoFamily::Ipv4);
            want.difference(have).for_each(|&p| add.add(&Port(p)));
            have.difference(want).for_each(|&p| del.add(&Port(p)));
            (add, del)
        };
        let (tcp_add, tcp_del) = diff(TCP_SET, 1, tcp, &self.tcp);
        let (udp_add, udp_del) = diff(UDP_SET, 2, udp, &self.udp);
        batch.add_iter(tcp_del.elems_iter(), MsgType::Del);
        batch.add_iter(udp_del.elems_iter(), MsgType::Del);
        batch.add_iter(tcp_add.elems_iter(), MsgType::Add);
        batch.add_iter(udp_add.elems_iter(), MsgType::Add);
        send(&batch.finalize())?;
        self.tcp = tcp.clone();
        self.udp = udp.clone();
        Ok(())
    }

    /// Deletes the table (at a clean stop).
    pub fn remove(self) -> io::Result<()> {
        let table = Table::new(TABLE, ProtoFamily::Ipv4);
        let mut batch = Batch::new();
        batch.add(&table, MsgType::Del);
        send(&batch.finalize())
    }
}

/// Sends a batch and reads every answer; the first error is returned.
fn send(batch: &FinalizedBatch) -> io::Result<()> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let portid = socket.portid();
    socket.send_all(batch)?;
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    let mut expected = batch.sequence_numbers();
    while !expected.is_empty() {
        for message in socket.recv(&mut buffer[..])? {
            let message = message?;
            let Some(seq) = expected.next() else {
                return Err(io::Error::other("nftables answered more than was asked"));
            };
            mnl::cb_run(message, seq, portid)?;
        }
    }
    Ok(())
}
