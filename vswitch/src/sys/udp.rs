//! The underlay UDP sockets that carry VXLAN and flannel-udp traffic:
//! non-blocking, close-on-exec, optionally `SO_REUSEPORT` (one socket per
//! worker on the same port, the kernel spreading flows between them) and
//! with chosen buffer sizes. No forwarding rules here.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Options of [`bind_udp`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// `SO_REUSEPORT`: several sockets (all with it set) share the port.
    pub reuse_port: bool,
    /// Receive buffer in bytes. Set with `SO_RCVBUFFORCE` when the process
    /// may (CAP_NET_ADMIN), so `net.core.rmem_max` does not cap it, else
    /// with `SO_RCVBUF`. The kernel doubles the value for its bookkeeping.
    pub recv_buf: Option<usize>,
    /// Send buffer in bytes, as `recv_buf` (`SO_SNDBUFFORCE`, `SO_SNDBUF`).
    pub send_buf: Option<usize>,
}

/// A non-blocking, close-on-exec IPv4 UDP socket bound to `addr` (port 0
/// picks a free one; see [`local_port`]).
pub fn bind_udp(addr: SocketAddrV4, opts: UdpOptions) -> io::Result<UdpSocket> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} {addr}: {e}"));
    let sock = Socket::new(
        Domain::IPV4,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(|e| ctx("socket for", e))?;
    if opts.reuse_port {
        sock.set_reuse_port(true)
            .map_err(|e| ctx("SO_REUSEPORT", e))?;
    }
    if let Some(n) = opts.recv_buf {
        set_buf(&sock, n, Dir::Recv).map_err(|e| ctx(&format!("receive buffer {n}"), e))?;
    }
    if let Some(n) = opts.send_buf {
        set_buf(&sock, n, Dir::Send).map_err(|e| ctx(&format!("send buffer {n}"), e))?;
    }
    sock.bind(&addr.into()).map_err(|e| ctx("bind", e))?;
    Ok(sock.into())
}

/// `lanes` sockets bound to `ip`, socket `j` to a port whose residue
/// modulo `lanes` is `j`: the tunnel's send sockets, so that the source
/// port tells a receiver the flow's lane (`encap::flow::lane`). Ports are
/// tried in blocks of `lanes` from a pseudo-random start in 32768–60999
/// (Linux's default ephemeral range), a block at a time, until one is
/// wholly free; `SO_REUSEPORT` is never set on them, so that none joins
/// another socket's port.
pub fn bind_lanes(ip: Ipv4Addr, lanes: usize, opts: UdpOptions) -> io::Result<Vec<UdpSocket>> {
    const FIRST: usize = 32768;
    const END: usize = 61000;
    let opts = UdpOptions {
        reuse_port: false,
        ..opts
    };
    let lanes = lanes.max(1);
    // Blocks start at multiples of `lanes`: port `base + j` is `≡ j`.
    let first = FIRST.next_multiple_of(lanes);
    let blocks = END.saturating_sub(first) / lanes;
    // Start somewhere else on every node and run, so that two agents on
    // one host (tests) do not race for the same block.
    let seed = {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::process::id()) as usize
    };
    let mut last = None;
    for tried in 0..blocks.min(64) {
        let base = first + (seed.wrapping_add(tried * 7919) % blocks) * lanes;
        let block: io::Result<Vec<UdpSocket>> = (0..lanes)
            .map(|j| bind_udp(SocketAddrV4::new(ip, (base + j) as u16), opts))
            .collect();
        match block {
            Ok(socks) => return Ok(socks),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// The port a socket is bound to.
pub fn local_port(sock: &UdpSocket) -> io::Result<u16> {
    Ok(sock.local_addr()?.port())
}

#[derive(Clone, Copy)]
enum Dir {
    Recv,
    Send,
}

fn set_buf(sock: &Socket, n: usize, dir: Dir) -> io::Result<()> {
    let forced = match dir {
        Dir::Recv => setsockopt(sock, sockopt::RcvBufForce, &n),
        Dir::Send => setsockopt(sock, sockopt::SndBufForce, &n),
    };
    match forced {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let s = SockRef::from(sock);
            match dir {
                Dir::Recv => s.set_recv_buffer_size(n),
                Dir::Send => s.set_send_buffer_size(n),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Most datagrams the kernel takes in one `UDP_SEGMENT` send
/// (`UDP_MAX_SEGMENTS`, 64 before Linux 6.4 and this is what all take).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes one `UDP_SEGMENT` send may carry (an IPv4 datagram's limit
/// less the IP and UDP headers).
pub const GSO_MAX_BYTES: usize = 65535 - 20 - 8;

/// Sends `buf` to `dst` as datagrams of `seg_len` bytes each (the last may
/// be shorter) in one call, with `UDP_SEGMENT` (UDP GSO, Linux 4.18+): the
/// kernel, or the NIC, cuts the buffer. At most [`GSO_MAX_SEGMENTS`]
/// datagrams and [`GSO_MAX_BYTES`] bytes. A kernel or device that cannot do
/// it answers `EIO` or `EINVAL`; the caller falls back to one send each.
pub fn send_gso(
    sock: &UdpSocket,
    buf: &[u8],
    seg_len: u16,
    dst: SocketAddrV4,
) -> io::Result<usize> {
    send_gso_iov(sock, &[io::IoSlice::new(buf)], seg_len, dst)
}

/// [`send_gso`] of the concatenation of `iov`: the kernel gathers the
/// slices and cuts the whole at every `seg_len` bytes, wherever the slice
/// boundaries fall. So a datagram can be sent as its headers and its
/// payload, each from where it already is (no copy to put them side by
/// side). At most `UIO_MAXIOV` (1024) slices.
pub fn send_gso_iov(
    sock: &UdpSocket,
    iov: &[io::IoSlice<'_>],
    seg_len: u16,
    dst: SocketAddrV4,
) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let cmsg = [ControlMessage::UdpGsoSegments(&seg_len)];
    let addr = SockaddrIn::from(dst);
    sendmsg(sock.as_raw_fd(), iov, &cmsg, MsgFlags::empty(), Some(&addr)).map_err(io::Error::from)
}

/// One datagram to `dst`, gathered from `iov` (e.g. headers and payload
/// kept apart).
pub fn send_iov(sock: &UdpSocket, iov: &[io::IoSlice<'_>], dst: SocketAddrV4) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrIn};
    use std::os::fd::AsRawFd;
    let none: [ControlMessage<'_>; 0] = [];
    let addr = SockaddrIn::from(dst);
    sendmsg(sock.as_raw_fd(), iov, &none, MsgFlags::empty(), Some(&addr)).map_err(io::Error::from)
}

/// Reusable `sendmmsg` headers (nix's `MultiHeaders`), so that a batch
/// send allocates nothing.
#[derive(Debug)]
pub struct MmsgHeaders(nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrIn>);

// SAFETY: the raw pointers inside `MultiHeaders` point into its own boxed
// storage (the address slots) or are rewritten by every `sendmmsg` call
// before the kernel reads them; nothing else aliases that storage, so
// moving the whole value to another thread (the worker that uses it) is
// sound. It is not `Sync`: only one thread uses it.
unsafe impl Send for MmsgHeaders {}

/// Headers for [`send_many`] batches of up to `n` datagrams.
pub fn mmsg_headers(n: usize) -> MmsgHeaders {
    MmsgHeaders(nix::sys::socket::MultiHeaders::preallocate(n, None))
}

/// Sends datagram `i` (`bufs[i]`) to `dsts[i]` for every `i`, with one
/// `sendmmsg` call. Returns how many the kernel took, in order (it may take
/// fewer than given; an error means it took none).
pub fn send_many(
    sock: &UdpSocket,
    headers: &mut MmsgHeaders,
    bufs: &[[io::IoSlice<'_>; 1]],
    dsts: &[Option<nix::sys::socket::SockaddrIn>],
) -> io::Result<usize> {
    Ok(sendmmsg(sock, headers, bufs, dsts, [])?.0)
}

/// Most messages one [`send_gso_many`] sends.
pub const GSO_MMSG_MAX: usize = 4;

/// Headers for [`send_gso_many`]: [`GSO_MMSG_MAX`] messages, each with
/// room for its `UDP_SEGMENT` control message.
pub fn gso_mmsg_headers() -> MmsgHeaders {
    MmsgHeaders(nix::sys::socket::MultiHeaders::preallocate(
        GSO_MMSG_MAX,
        Some(nix::cmsg_space!(u16)),
    ))
}

/// [`send_gso_iov`] of every message of `msgs` (each a list of slices, cut
/// at `seg_len` bytes) to `dst`, with one `sendmmsg` call. Returns how many
/// messages the kernel took, in order, and their bytes; it may take fewer
/// than given, and an error means it took none. Messages beyond
/// [`GSO_MMSG_MAX`] are not sent.
pub fn send_gso_many(
    sock: &UdpSocket,
    headers: &mut MmsgHeaders,
    msgs: &[&[io::IoSlice<'_>]],
    seg_len: u16,
    dst: SocketAddrV4,
) -> io::Result<(usize, usize)> {
    use nix::sys::socket::{ControlMessage, SockaddrIn};
    // `sendmmsg` pairs messages, addresses and headers up to the shortest.
    let addrs = [Some(SockaddrIn::from(dst)); GSO_MMSG_MAX];
    sendmmsg(
        sock,
        headers,
        msgs,
        &addrs,
        [ControlMessage::UdpGsoSegments(&seg_len)],
    )
}

/// One `sendmmsg` of message `i` (`msgs[i]`, gathered from its slices) to
/// `dsts[i]`, each with `cmsgs`: how many messages the kernel took, and
/// their bytes.
fn sendmmsg<'a, I, const C: usize>(
    sock: &UdpSocket,
    headers: &'a mut MmsgHeaders,
    msgs: &'a [I],
    dsts: &[Option<nix::sys::socket::SockaddrIn>],
    cmsgs: [nix::sys::socket::ControlMessage<'a>; C],
) -> io::Result<(usize, usize)>
where
    I: AsRef<[io::IoSlice<'a>]>,
{
    use nix::sys::socket::MsgFlags;
    use std::os::fd::AsRawFd;
    let sent = nix::sys::socket::sendmmsg(
        sock.as_raw_fd(),
        &mut headers.0,
        msgs,
        dsts,
        cmsgs,
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(sent.fold((0, 0), |(n, bytes), m| (n + 1, bytes + m.bytes)))
}

/// Turns on `UDP_GRO` (Linux 5.0+): a receive may then return many
/// datagrams of one sender, back to back, with their size in a control
/// message; see [`recv_many`]. Errors if the kernel does not know it.
pub fn enable_gro(sock: &UdpSocket) -> io::Result<()> {
    setsockopt(sock, sockopt::UdpGroSegment, &true).map_err(io::Error::from)
}

/// Control-message space per message of a [`RecvBatch`], in 8-byte words:
/// room for the `UDP_GRO` size (24 bytes on 64-bit Linux) with margin.
const CMSG_WORDS: usize = 8;

/// Reusable state for [`recv_many`]: for each message of a batch its
/// `mmsghdr`, iovec, sender address and control-message space, allocated
/// once, so that a batch receive allocates nothing.
///
/// Written here rather than with nix's `recvmmsg`/`MultiHeaders`, which
/// set `msg_namelen` and `msg_controllen` once: the kernel overwrites both
/// with what it wrote, so after one message without a control message a
/// reused slot would have no room for the next one's `UDP_GRO` size (the
/// batch would then look like one datagram). Every call here sets every
/// in/out field afresh.
#[derive(Debug)]
pub struct RecvBatch {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_in]>,
    /// `u64` words: aligned as `cmsghdr` needs.
    cmsgs: Box<[[u64; CMSG_WORDS]]>,
    /// Messages the last [`recv_many`] returned.
    received: usize,
}

// SAFETY: the raw pointers inside the headers point into the batch's own
// boxed storage or into buffers lent to one `recv_many` call, and are all
// rewritten by every call before the kernel reads them; between calls only
// the batch's own storage is read through them. Nothing else aliases that
// storage, so moving the batch to another thread (the worker that uses it)
// is sound. It is not `Sync`: only one thread uses it.
unsafe impl Send for RecvBatch {}

/// What one message of a [`recv_many`] batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received into the message's buffer.
    pub len: usize,
    /// The sender; `None` if it is not an IPv4 address.
    pub from: Option<SocketAddrV4>,
    /// With [`enable_gro`]: the size of each datagram in the buffer (all
    /// but the last have it); `None` when the message is one datagram.
    pub seg: Option<usize>,
}

impl RecvBatch {
    /// State for batches of up to `n` messages (at least one).
    pub fn new(n: usize) -> RecvBatch {
        let n = n.max(1);
        // SAFETY: mmsghdr, iovec and sockaddr_in are plain C structs
        // (integers and pointers) for which all-zero bytes are a valid
        // value (null pointers, zero lengths).
        let (hdr, iov, addr) = unsafe {
            (
                std::mem::zeroed::<libc::mmsghdr>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::sockaddr_in>(),
            )
        };
        RecvBatch {
            hdrs: vec![hdr; n].into_boxed_slice(),
            iovs: vec![iov; n].into_boxed_slice(),
            addrs: vec![addr; n].into_boxed_slice(),
            cmsgs: vec![[0; CMSG_WORDS]; n].into_boxed_slice(),
            received: 0,
        }
    }

    /// Most messages one batch receives.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Message `i` of the last [`recv_many`] batch (`i` below what it
    /// returned). A message truncated because its buffer was too small
    /// (`MSG_TRUNC`) or whose control data was (`MSG_CTRUNC`: its datagram
    /// size may be lost) is an `InvalidData` error, never a short message.
    pub fn message(&self, i: usize) -> io::Result<Received> {
        if i >= self.received {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no such message in the batch",
            ));
        }
        let m = &self.hdrs[i];
        let h = &m.msg_hdr;
        if h.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram larger than the receive buffer",
            ));
        }
        if h.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control data larger than its buffer",
            ));
        }
        let a = &self.addrs[i];
        let from = (h.msg_namelen as usize >= std::mem::size_of::<libc::sockaddr_in>()
            && libc::c_int::from(a.sin_family) == libc::AF_INET)
            .then(|| {
                SocketAddrV4::new(
                    u32::from_be(a.sin_addr.s_addr).into(),
                    u16::from_be(a.sin_port),
                )
            });
        let mut seg = None;
        // SAFETY: `h` is the header the kernel filled in by the last
        // `recvmmsg`: `msg_control` points to this batch's own `cmsgs[i]`
        // (alive, unmoved: a boxed slice) and `msg_controllen` is what the
        // kernel wrote there, no more than its size (MSG_CTRUNC is checked
        // above). CMSG_FIRSTHDR/CMSG_NXTHDR stay within those bounds and
        // return null past the end; CMSG_DATA points to `cmsg_len -
        // CMSG_LEN(0)` bytes of data, and an int is read only when the
        // kernel said there is one, unaligned-safe.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                let hdr = &*c;
                if hdr.cmsg_level == libc::SOL_UDP
                    && hdr.cmsg_type == libc::UDP_GRO
                    && hdr.cmsg_len as usize
                        >= libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize
                {
                    let n = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    seg = usize::try_from(n).ok().filter(|n| *n > 0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        Ok(Received {
            len: m.msg_len as usize,
            from,
            seg,
        })
    }
}

/// Receives up to [`RecvBatch::capacity`] messages with one `recvmmsg`,
/// message `i` into the `i`-th buffer of `bufs` (at most as many messages
/// as buffers). Returns how many arrived (at least one; none waiting is
/// [`io::ErrorKind::WouldBlock`] on a non-blocking socket); read each with
/// [`RecvBatch::message`]. With [`enable_gro`] a message may hold many
/// datagrams of one sender, back to back.
pub fn recv_many<'a>(
    sock: &UdpSocket,
    batch: &mut RecvBatch,
    bufs: impl IntoIterator<Item = &'a mut [u8]>,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    batch.received = 0;
    let mut count = 0;
    for (i, buf) in bufs.into_iter().take(batch.hdrs.len()).enumerate() {
        batch.iovs[i] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let h = &mut batch.hdrs[i].msg_hdr;
        h.msg_name = std::ptr::from_mut(&mut batch.addrs[i]).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = std::ptr::from_mut(&mut batch.iovs[i]);
        h.msg_iovlen = 1;
        h.msg_control = batch.cmsgs[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of::<[u64; CMSG_WORDS]>() as _;
        h.msg_flags = 0;
        batch.hdrs[i].msg_len = 0;
        count = i + 1;
    }
    if count == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "recvmmsg without a buffer",
        ));
    }
    // SAFETY: the first `count` headers were just set to point at live
    // memory of the right sizes: one iovec each, over a buffer borrowed
    // mutably for the whole call (`'a`); the sender address and control
    // space in the batch's own storage, their capacities in
    // `msg_namelen`/`msg_controllen`. The kernel writes only within those
    // and into the headers themselves; no timeout pointer is passed.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            batch.hdrs.as_mut_ptr(),
            count as libc::c_uint,
            0,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    batch.received = (n as usize).min(count);
    Ok(batch.received)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);

    #[test]
    fn binds_non_blocking_and_cloexec() {
        let s = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let port = local_port(&s).unwrap();
        assert_ne!(port, 0);
        let mut buf = [0u8; 16];
        let e = s.recv_from(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let flags = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn reuse_port_twice_on_the_same_port() {
        let opts = UdpOptions {
            reuse_port: true,
            ..Default::default()
        };
        let a = bind_udp(LOCAL, opts).unwrap();
        let port = local_port(&a).unwrap();
        let at = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let b = bind_udp(at, opts).unwrap();
        assert_eq!(local_port(&b).unwrap(), port);
        let e = bind_udp(at, UdpOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn buffer_sizes_are_applied() {
        let want = 4 << 20;
        let s = bind_udp(
            LOCAL,
            UdpOptions {
                recv_buf: Some(want),
                send_buf: Some(want),
                ..Default::default()
            },
        )
        .unwrap();
        let r = SockRef::from(&s);
        let (rcv, snd) = (r.recv_buffer_size().unwrap(), r.send_buffer_size().unwrap());
        if crate::sys::testutil::is_root() {
            // Forced: the kernel doubles what it was given.
            assert_eq!((rcv, snd), (2 * want, 2 * want));
        } else {
            assert!(rcv > 0 && snd > 0);
        }
    }

    #[test]
    fn gso_send_arrives_as_separate_datagrams() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        // 3 datagrams of 1000 bytes and one of 500, each filled with its index.
        let mut buf = Vec::new();
        for (i, n) in [1000usize, 1000, 1000, 500].iter().enumerate() {
            buf.extend(std::iter::repeat_n(i as u8, *n));
        }
        assert_eq!(send_gso(&tx, &buf, 1000, to).unwrap(), buf.len());
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = [0u8; 2000];
        for (i, n) in [1000usize, 1000, 1000, 500].iter().enumerate() {
            let k = rx.recv(&mut got).unwrap();
            assert_eq!(k, *n, "datagram {i}");
            assert!(
                got[..k].iter().all(|b| *b == i as u8),
                "datagram {i} content"
            );
        }
    }

    #[test]
    fn gso_iov_send_is_cut_across_slices() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        // Datagram i: a 10-byte header "Hi..." and a payload of (i + 1)
        // bytes; the header-payload pairs are the slices, the kernel cuts
        // at every 13 bytes (the last datagram is shorter).
        let hdrs: Vec<[u8; 10]> = (0..4).map(|i| [b'H' + i as u8; 10]).collect();
        let payloads = [vec![1u8; 3], vec![2u8; 3], vec![3u8; 3], vec![4u8; 1]];
        let mut iov = Vec::new();
        for (h, p) in hdrs.iter().zip(&payloads) {
            iov.push(io::IoSlice::new(h));
            iov.push(io::IoSlice::new(p));
        }
        assert_eq!(send_gso_iov(&tx, &iov, 13, to).unwrap(), 3 * 13 + 11);
        assert_eq!(send_iov(&tx, &iov[..2], to).unwrap(), 13);
        rx.set_nonblocking(false).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = [0u8; 100];
        for (i, p) in payloads
            .iter()
            .chain(std::iter::once(&payloads[0]))
            .enumerate()
        {
            let k = rx.recv(&mut got).unwrap();
            let h = &hdrs[i % 4];
            assert_eq!(k, h.len() + p.len(), "datagram {i}");
            assert_eq!(&got[..10], h, "header of {i}");
            assert_eq!(&got[10..k], &p[..], "payload of {i}");
        }
    }

    /// Receives with [`recv_many`] until `want` bytes came (2 s at most);
    /// every message as (sender port, bytes, datagram size).
    fn recv_all(
        rx: &UdpSocket,
        batch: &mut RecvBatch,
        want: usize,
    ) -> Vec<(u16, Vec<u8>, Option<usize>)> {
        let mut bufs = vec![vec![0u8; 65536]; batch.capacity()];
        let (mut got, mut total) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while total < want && std::time::Instant::now() < deadline {
            match recv_many(rx, batch, bufs.iter_mut().map(|b| &mut b[..])) {
                Ok(n) => {
                    for (i, b) in bufs.iter().enumerate().take(n) {
                        let m = batch.message(i).unwrap();
                        total += m.len;
                        got.push((m.from.unwrap().port(), b[..m.len].to_vec(), m.seg));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn gro_receive_returns_segments_and_their_size() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        enable_gro(&rx).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let mut buf = Vec::new();
        for (i, n) in [1200usize, 1200, 1200, 700].iter().enumerate() {
            buf.extend(std::iter::repeat_n(i as u8, *n));
        }
        // Sent as one GSO burst, they may come back coalesced (GRO) or one
        // by one: either way every byte arrives, in order, and the reported
        // size cuts them at the right places.
        send_gso(&tx, &buf, 1200, to).unwrap();
        let mut got = Vec::new();
        for (port, bytes, seg) in recv_all(&rx, &mut RecvBatch::new(4), buf.len()) {
            assert_eq!(port, local_port(&tx).unwrap());
            for d in bytes.chunks(seg.unwrap_or(bytes.len())) {
                let first = d[0];
                assert!(
                    d.iter().all(|b| *b == first),
                    "a datagram boundary fell inside a chunk"
                );
            }
            got.extend_from_slice(&bytes);
        }
        assert_eq!(got, buf);
    }

    /// One batch state, reused: a message slot that last held a datagram
    /// without a control message still reports the next one's GRO size
    /// (nix's `MultiHeaders` loses it there), and several messages arrive
    /// in one call.
    #[test]
    fn recv_many_reuses_its_slots_and_batches() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        enable_gro(&rx).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        let mut batch = RecvBatch::new(4);
        tx.send_to(b"single", to).unwrap();
        let got = recv_all(&rx, &mut batch, 6);
        assert_eq!(
            got,
            vec![(local_port(&tx).unwrap(), b"single".to_vec(), None)]
        );

        // On loopback a GSO send reaches a UDP_GRO socket whole.
        let burst: Vec<u8> = (0..3500).map(|i| (i / 1000) as u8).collect();
        send_gso(&tx, &burst, 1000, to).unwrap();
        let got = recv_all(&rx, &mut batch, burst.len());
        assert_eq!(got.len(), 1, "one GRO message");
        assert_eq!((&got[0].1, got[0].2), (&burst, Some(1000)));

        // Five datagrams waiting: four in the first call, one in the next.
        for i in 0..5u8 {
            tx.send_to(&[i; 10], to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut bufs = vec![vec![0u8; 100]; 4];
        let n = recv_many(&rx, &mut batch, bufs.iter_mut().map(|b| &mut b[..])).unwrap();
        assert_eq!(n, 4);
        for (i, b) in bufs.iter().enumerate() {
            let m = batch.message(i).unwrap();
            assert_eq!((m.len, m.seg), (10, None));
            assert_eq!(b[..10], [i as u8; 10]);
        }
        assert!(batch.message(4).is_err());
        // Fewer buffers than the batch holds: no more messages than buffers.
        let n = recv_many(&rx, &mut batch, bufs.iter_mut().take(1).map(|b| &mut b[..])).unwrap();
        assert_eq!((n, batch.message(0).unwrap().len), (1, 10));
        assert!(batch.message(1).is_err());
        let e = recv_many(&rx, &mut batch, bufs.iter_mut().map(|b| &mut b[..])).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_truncated_message_is_an_error() {
        let rx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        enable_gro(&rx).unwrap();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
        let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();
        tx.send_to(&[7; 100], to).unwrap();
        tx.send_to(&[8; 10], to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut batch = RecvBatch::new(2);
        let mut bufs = [[0u8; 50]; 2];
        let n = recv_many(&rx, &mut batch, bufs.iter_mut().map(|b| &mut b[..])).unwrap();
        assert_eq!(n, 2);
        let e = batch.message(0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(batch.message(1).unwrap().len, 10);
        let e = recv_many(&rx, &mut batch, std::iter::empty()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
