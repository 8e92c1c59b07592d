//! TAP devices with a virtio-net header, the switch's pod and host ports.
//!
//! A [`Tap`] is an fd on `/dev/net/tun` attached (`TUNSETIFF`) to a TAP
//! netdev with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte vnet header
//! (`TUNSETVNETHDRSZ`, `struct virtio_net_hdr_v1`, little-endian fields)
//! and no offloads until [`Tap::set_offload`] asks for some. Every frame read
//! or written through it is preceded by that header.
//!
//! The fd is the device's lifeline, not its address: it stays valid when the
//! netdev moves to another network namespace or is renamed, and dropping the
//! last fd of a (non-persistent) TAP deletes the netdev, in whatever
//! namespace it is then (once no other process holds a copy of the fd: a
//! child forked by another thread has one until its `exec` closes it).
//! Deleting the namespace the netdev lives in deletes the netdev too; the fd
//! then only reports `EBADFD`.
//!
//! The fd is non-blocking: an empty queue reads as
//! [`io::ErrorKind::WouldBlock`]. No forwarding rules here.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Length of the vnet header in front of every frame on a [`Tap`]
/// (`struct virtio_net_hdr_v1`, as `virtio_net_hdr_mrg_rxbuf`).
pub const VNET_HDR_LEN: usize = 12;

/// `TUNSETOFFLOAD` flag: the switch accepts frames with partial checksums.
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// `TUNSETOFFLOAD` flag: the switch accepts TCP/IPv4 super-packets (TSO).
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// `TUNSETOFFLOAD` flag: the switch accepts TCP/IPv6 super-packets.
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
/// `TUNSETOFFLOAD` flag: TSO with ECN.
pub const TUN_F_TSO_ECN: u32 = libc::TUN_F_TSO_ECN;
/// `TUNSETOFFLOAD` flag: UDP/IPv4 segmentation offload (Linux 6.2+).
pub const TUN_F_USO4: u32 = libc::TUN_F_USO4;
/// `TUNSETOFFLOAD` flag: UDP/IPv6 segmentation offload (Linux 6.2+).
pub const TUN_F_USO6: u32 = libc::TUN_F_USO6;

/// Longest interface name the kernel takes (`IFNAMSIZ` minus the NUL).
const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// How to create a [`Tap`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// `IFF_MULTI_QUEUE`: more queues can be attached with
    /// [`Tap::open_queue`], one per worker.
    pub multi_queue: bool,
}

/// One queue (fd) of a TAP device. See the module documentation.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    ifindex: u32,
    multi_queue: bool,
}

impl Tap {
    /// Creates a single-queue TAP named `name` in the calling thread's
    /// network namespace. `name` may be empty (the kernel picks `tapN`) or a
    /// pattern such as `"twtap%d"`; fails if a device with that name exists.
    pub fn create(name: &str) -> io::Result<Tap> {
        Tap::create_with(name, TapOptions::default())
    }

    /// As [`Tap::create`], with options.
    pub fn create_with(name: &str, opts: TapOptions) -> io::Result<Tap> {
        Tap::attach(name, opts.multi_queue, true)
    }

    /// Attaches one more queue to this multi-queue TAP and returns its fd.
    /// The kernel finds the device by its current name in the calling
    /// thread's namespace, so after a move call this inside
    /// [`NetNs::run`](super::netns::NetNs::run) of the namespace it lives in.
    pub fn open_queue(&self) -> io::Result<Tap> {
        if !self.multi_queue {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TAP {}: not created with multi_queue", self.name),
            ));
        }
        let name = self.current_name()?;
        let mut q = Tap::attach(&name, true, false)?;
        q.ifindex = self.ifindex;
        Ok(q)
    }

    fn attach(name: &str, multi_queue: bool, exclusive: bool) -> io::Result<Tap> {
        let mut ifr = ifreq_named(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| context(e, "open /dev/net/tun"))?;

        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        if exclusive {
            flags |= libc::IFF_TUN_EXCL;
        }
        // The IFF_* TUN flags all fit in the 16-bit ifr_flags.
        ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `ifr` is a
        // valid, exclusively borrowed ifreq that outlives the call, and the
        // fd is open.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                " (an interface with this name exists)"
            } else {
                ""
            };
            return Err(context(e, &format!("TUNSETIFF {name:?}{hint}")));
        }
        let name = ifreq_name(&ifr);

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at a live local.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(context(e, &format!("TUNSETVNETHDRSZ {name}")));
        }
        let le: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one int through the pointer, which
        // points at a live local.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETLE, &le) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(context(e, &format!("TUNSETVNETLE {name}")));
        }

        let mut tap = Tap {
            file,
            name,
            ifindex: 0,
            multi_queue,
        };
        tap.set_offload(0)?;
        if exclusive {
            tap.ifindex = nix::net::if_::if_nametoindex(tap.name.as_str())
                .map_err(|e| context(e.into(), &format!("if_nametoindex {}", tap.name)))?;
        }
        Ok(tap)
    }

    /// The name the device got at creation. It does not follow renames
    /// (see [`Tap::current_name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name the device has now, wherever it lives (`TUNGETIFF`).
    pub fn current_name(&self) -> io::Result<String> {
        let mut ifr = ifreq_named("")?;
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `ifr`, a valid,
        // exclusively borrowed ifreq that outlives the call.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNGETIFF, &mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(context(e, &format!("TUNGETIFF {}", self.name)));
        }
        Ok(ifreq_name(&ifr))
    }

    /// The ifindex of a device named [`Tap::name`] in the calling thread's
    /// namespace. Only meaningful while the device has that name there; a
    /// moved or renamed TAP makes this fail or name another device.
    pub fn ifindex(&self) -> io::Result<u32> {
        nix::net::if_::if_nametoindex(self.name.as_str())
            .map_err(|e| context(e.into(), &format!("if_nametoindex {}", self.name)))
    }

    /// The ifindex the device had when it was created, in the namespace it
    /// was created in. The kernel keeps it across a move unless the target
    /// namespace already uses that index.
    pub fn created_ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sets the offloads (`TUN_F_*`) the reader of this fd accepts; with
    /// none (the default) the kernel hands over only whole, checksummed
    /// frames of at most MTU size.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned
        // long of flags), no memory is passed.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(context(
                e,
                &format!("TUNSETOFFLOAD {flags:#x} {}", self.name),
            ));
        }
        Ok(())
    }

    /// Reads one frame: `buf` receives the [`VNET_HDR_LEN`]-byte vnet header
    /// followed by the Ethernet frame, and the return value counts both.
    /// `buf` must hold the largest frame (MTU + 14 (+4 for VLAN) + 12, or
    /// 64 KiB + 12 with offloads); the kernel drops a frame that does not fit
    /// and reports `EFAULT`. No frame queued is [`io::ErrorKind::WouldBlock`].
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame: `buf` is the [`VNET_HDR_LEN`]-byte vnet header
    /// followed by the Ethernet frame. Returns the bytes written (all of
    /// them; the kernel takes a frame whole or not at all).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Writes `hdr` and `frame` as one frame (`writev`). Returns the bytes
    /// written, header included.
    pub fn write_frame(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        (&self.file).write_vectored(&[IoSlice::new(hdr), IoSlice::new(frame)])
    }

    /// Reads one frame into `hdr` and `frame` (`readv`) and returns the
    /// length of the Ethernet frame alone.
    pub fn read_frame(&self, hdr: &mut [u8; VNET_HDR_LEN], frame: &mut [u8]) -> io::Result<usize> {
        let n = (&self.file).read_vectored(&mut [IoSliceMut::new(hdr), IoSliceMut::new(frame)])?;
        n.checked_sub(VNET_HDR_LEN).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "TAP {}: read {n} bytes, shorter than the vnet header",
                    self.name
                ),
            )
        })
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A zeroed ifreq with `name` in `ifr_name`.
fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    if name.len() > MAX_NAME_LEN || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}: at most {MAX_NAME_LEN} bytes, no NUL or '/'"),
        ));
    }
    // SAFETY: ifreq is a plain C struct (a byte array and a union of
    // integers, sockaddrs and a pointer) for which all-zero bytes are a
    // valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(ifr)
}

/// The NUL-terminated name in an ifreq the kernel filled in.
fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sys::netlink::{self, LinkConfig};
    use crate::sys::poll::{Events, Poller};
    use crate::sys::testutil::{need_root, TestNs};
    use encap::MacAddr;
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::time::{Duration, Instant};

    const POD_MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0x63, 0x00, 0x02]);
    const PEER_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    /// Reads frames (with poll, up to `timeout`) until `want` accepts one;
    /// returns the frame without the vnet header and that header.
    fn read_until(
        tap: &Tap,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<([u8; VNET_HDR_LEN], Vec<u8>)> {
        let poller = Poller::new().unwrap();
        poller.add(tap, 1).unwrap();
        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536 + VNET_HDR_LEN];
        loop {
            match tap.read(&mut buf) {
                Ok(n) => {
                    assert!(n >= VNET_HDR_LEN + 14, "short read {n}");
                    let frame = &buf[VNET_HDR_LEN..n];
                    if want(frame) {
                        let hdr: [u8; VNET_HDR_LEN] = buf[..VNET_HDR_LEN].try_into().unwrap();
                        return Some((hdr, frame.to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    poller.wait(&mut events, Some(left)).unwrap();
                }
                Err(e) => panic!("TAP read: {e}"),
            }
        }
    }

    fn is_arp(f: &[u8]) -> bool {
        f.len() >= 42 && f[12..14] == [0x08, 0x06]
    }

    /// An ARP request from PEER_MAC/`sender` asking for `target`.
    fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
        f.extend_from_slice(&PEER_MAC);
        f.extend_from_slice(&sender.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    }

    #[test]
    fn create_picks_name_and_sets_vnet_header() {
        if !need_root("tap::create_picks_name_and_sets_vnet_header") {
            return;
        }
        let t = TestNs::new();
        let (name, idx, cur, hdr_sz) =
            t.ns.run(|| {
                let tap = Tap::create("twtap%d").unwrap();
                let mut sz: libc::c_int = 0;
                // SAFETY: TUNGETVNETHDRSZ writes one int into `sz`.
                let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut sz) };
                assert_eq!(rc, 0);
                let idx = tap.ifindex().unwrap();
                (tap.name().to_owned(), idx, tap.current_name().unwrap(), sz)
            })
            .unwrap();
        assert!(name.starts_with("twtap") && name != "twtap%d", "{name}");
        assert_eq!(cur, name);
        assert!(idx > 0);
        assert_eq!(hdr_sz, VNET_HDR_LEN as libc::c_int);
        // The TAP was dropped at the end of the closure: the netdev is gone
        // (as soon as no forked child holds a copy of the fd).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let links = t.ip(&["-o", "link", "show"]);
            if !links.contains(&name) {
                break;
            }
            assert!(Instant::now() < deadline, "{links}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn create_rejects_bad_or_taken_names() {
        if !need_root("tap::create_rejects_bad_or_taken_names") {
            return;
        }
        let t = TestNs::new();
        t.ns.run(|| {
            let e = Tap::create("a-name-that-is-too-long").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            let e = Tap::create("lo").unwrap_err();
            assert!(e.to_string().contains("TUNSETIFF"), "{e}");
            let tap = Tap::create("twtapx").unwrap();
            let e = Tap::create("twtapx").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
            assert!(e.to_string().contains("exists"), "{e}");
            drop(tap);
            // The name is free again once the last reference to the file is
            // gone; a child being forked by a parallel test (`ip ...`) can
            // hold a copy until its exec closes it, so allow a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(e) = Tap::create("twtapx") {
                assert_eq!(e.kind(), io::ErrorKind::ResourceBusy, "{e}");
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .unwrap();
    }

    #[test]
    fn empty_tap_reads_would_block_and_short_write_is_an_error() {
        if !need_root("tap::empty_tap_reads_would_block_and_short_write_is_an_error") {
            return;
        }
        let t = TestNs::new();
        t.ns.run(|| {
            let tap = Tap::create("").unwrap();
            assert!(tap.name().starts_with("tap"), "{}", tap.name());
            let mut buf = [0u8; 2048];
            let e = tap.read(&mut buf).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            let mut hdr = [0u8; VNET_HDR_LEN];
            let e = tap.read_frame(&mut hdr, &mut buf).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            // Shorter than the vnet header: the kernel says EINVAL, not "0".
            let e = tap.write(&[0u8; 4]).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        })
        .unwrap();
    }

    /// The pod set-up of the design: TAP made in the "host" namespace, moved
    /// into the pod namespace as eth0 and configured there; the kernel's ARP
    /// traffic crosses the fd with a 12-byte vnet header in both directions.
    #[test]
    fn moved_tap_carries_arp_with_vnet_header() {
        if !need_root("tap::moved_tap_carries_arp_with_vnet_header") {
            return;
        }
        let host = TestNs::new();
        let pod = TestNs::new();
        let tap = host.ns.run(|| Tap::create("twtap%d")).unwrap().unwrap();
        let created = tap.created_ifindex();
        host.ns
            .run(|| netlink::move_link_to_netns(created, &pod.ns, "eth0"))
            .unwrap()
            .unwrap();
        assert_eq!(tap.current_name().unwrap(), "eth0");
        let pod_ip = Ipv4Addr::new(10, 99, 0, 2);
        pod.ns
            .run(|| {
                let cfg = LinkConfig {
                    mac: Some(POD_MAC),
                    mtu: Some(1400),
                    addrs: vec![(pod_ip, 24)],
                    up: true,
                };
                netlink::configure_link("eth0", &cfg)
            })
            .unwrap()
            .unwrap();

        // The pod's kernel resolves a neighbour: an ARP request from POD_MAC.
        pod.ns
            .run(|| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.send_to(b"hi", SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 5), 9))
                    .unwrap();
            })
            .unwrap();
        let (hdr, f) = read_until(&tap, Duration::from_secs(3), |f| {
            is_arp(f) && f[20..22] == [0, 1] && f[38..42] == [10, 99, 0, 5]
        })
        .expect("no ARP request for 10.99.0.5 came out of the TAP");
        assert_eq!(hdr, [0u8; VNET_HDR_LEN], "no offloads: all-zero header");
        assert_eq!(f[..6], [0xff; 6]);
        assert_eq!(f[6..12], POD_MAC.0);
        assert_eq!(f[28..32], pod_ip.octets());

        // A frame written with a zero header is taken: the kernel answers.
        let req = arp_request(Ipv4Addr::new(10, 99, 0, 7), pod_ip);
        let n = tap.write_frame(&[0u8; VNET_HDR_LEN], &req).unwrap();
        assert_eq!(n, VNET_HDR_LEN + req.len());
        let (_, reply) = read_until(&tap, Duration::from_secs(3), |f| {
            is_arp(f) && f[20..22] == [0, 2] && f[..6] == PEER_MAC
        })
        .expect("no ARP reply to our request");
        assert_eq!(reply[6..12], POD_MAC.0);
        assert_eq!(reply[28..32], pod_ip.octets());
        let links = pod.ip(&["-o", "link", "show", "eth0"]);
        assert!(
            links.contains("mtu 1400") && links.contains(&POD_MAC.to_string()),
            "{links}"
        );
    }

    #[test]
    fn tap_dies_with_its_namespace() {
        if !need_root("tap::tap_dies_with_its_namespace") {
            return;
        }
        let host = TestNs::new();
        let tap = host.ns.run(|| Tap::create("twtap%d")).unwrap().unwrap();
        {
            let pod = TestNs::new();
            let idx = tap.created_ifindex();
            host.ns
                .run(|| netlink::move_link_to_netns(idx, &pod.ns, "eth0"))
                .unwrap()
                .unwrap();
        }
        // The namespace is gone (its last reference was TestNs::ns), and the
        // netdev goes with it (asynchronously, in the kernel's netns cleanup
        // work); the fd stays open but detached: EBADFD.
        let deadline = Instant::now() + Duration::from_secs(10);
        let e = loop {
            match tap.write(&[0u8; 60]) {
                Err(e) if e.raw_os_error() == Some(libc::EBADFD) => break e,
                r if Instant::now() > deadline => panic!("TAP still attached: {r:?}"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert_eq!(e.raw_os_error(), Some(libc::EBADFD));
        let mut buf = [0u8; 2048];
        assert_eq!(
            tap.read(&mut buf).unwrap_err().raw_os_error(),
            Some(libc::EBADFD)
        );
        assert!(tap.current_name().is_err());
    }

    /// tun takes UDP segmentation only as USO4 and USO6 together (Linux
    /// 6.2+; before, both are refused too).
    #[test]
    fn uso_is_accepted_only_for_both_families() {
        if !need_root("tap::uso_is_accepted_only_for_both_families") {
            return;
        }
        let t = TestNs::new();
        t.ns.run(|| {
            let tap = Tap::create("twtap%d").unwrap();
            let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN;
            tap.set_offload(tso).unwrap();
            for alone in [TUN_F_USO4, TUN_F_USO6] {
                let e = tap.set_offload(tso | alone).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            }
            match tap.set_offload(tso | TUN_F_USO4 | TUN_F_USO6) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    let _ = writeln!(
                        io::stderr(),
                        "!!!!!!!! tap: this kernel has no USO (Linux < 6.2) !!!!!!!!"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        })
        .unwrap();
    }

    #[test]
    fn multi_queue_attaches_more_queues() {
        if !need_root("tap::multi_queue_attaches_more_queues") {
            return;
        }
        let t = TestNs::new();
        t.ns.run(|| {
            let single = Tap::create("twtap%d").unwrap();
            assert_eq!(
                single.open_queue().unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            let tap = Tap::create_with("twmq%d", TapOptions { multi_queue: true }).unwrap();
            let q2 = tap.open_queue().unwrap();
            assert_eq!(q2.name(), tap.name());
            assert_eq!(q2.created_ifindex(), tap.created_ifindex());
            drop(tap);
            // The device lives while a queue is attached.
            assert!(q2.ifindex().is_ok());
        })
        .unwrap();
    }
}
