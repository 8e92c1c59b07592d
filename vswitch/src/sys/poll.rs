//! A small level-triggered epoll wrapper for the worker threads, and a
//! [`Waker`] (an eventfd) another thread uses to interrupt a wait.
//!
//! Level-triggered: a fd that is still readable after a wait is reported
//! again by the next one, so a worker that caps its work per wake-up loses
//! nothing. No forwarding rules here.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// What a registered fd is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    pub readable: bool,
    pub writable: bool,
}

impl Interest {
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };

    fn flags(self) -> EpollFlags {
        let mut f = EpollFlags::empty();
        if self.readable {
            f |= EpollFlags::EPOLLIN;
        }
        if self.writable {
            f |= EpollFlags::EPOLLOUT;
        }
        f
    }
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The token the fd was registered with.
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// `EPOLLERR`: an error is pending on the fd (a read or write returns it).
    pub error: bool,
    /// `EPOLLHUP` or `EPOLLRDHUP`.
    pub hangup: bool,
}

/// A buffer [`Poller::wait`] fills.
#[derive(Debug)]
pub struct Events {
    buf: Vec<EpollEvent>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            buf: vec![EpollEvent::empty(); capacity.max(1)],
            len: 0,
        }
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| {
            // The kernel reports only the bits asked for plus ERR and HUP,
            // all known to `EpollFlags` (whose `events()` would panic on an
            // unknown one).
            let bits = e.events();
            Event {
                token: e.data(),
                readable: bits.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLPRI),
                writable: bits.contains(EpollFlags::EPOLLOUT),
                error: bits.contains(EpollFlags::EPOLLERR),
                hangup: bits.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLRDHUP),
            }
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An epoll instance (level-triggered, close-on-exec).
#[derive(Debug)]
pub struct Poller {
    epoll: Epoll,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Poller { epoll })
    }

    /// Waits for `fd` to be readable, reporting it as `token`.
    pub fn add(&self, fd: impl AsFd, token: u64) -> io::Result<()> {
        self.add_with(fd, token, Interest::READABLE)
    }

    /// Registers `fd` with the given interest.
    pub fn add_with(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        Ok(self
            .epoll
            .add(fd, EpollEvent::new(interest.flags(), token))?)
    }

    /// Changes the interest and token of a registered fd.
    pub fn modify(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = EpollEvent::new(interest.flags(), token);
        Ok(self.epoll.modify(fd, &mut ev)?)
    }

    /// Stops watching `fd`. (Closing a fd also removes it, once no
    /// duplicate of it is left open.)
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        Ok(self.epoll.delete(fd)?)
    }

    /// Waits until a registered fd is ready or `timeout` passes (`None`:
    /// forever) and fills `events`. Returns how many; 0 on timeout and when
    /// a signal interrupted the wait (`EINTR`). Timeouts are rounded up to
    /// whole milliseconds, so a short timeout never becomes a busy loop.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.len = 0;
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
            }
        };
        match self.epoll.wait(&mut events.buf, timeout) {
            Ok(n) => {
                events.len = n.min(events.buf.len());
                Ok(events.len)
            }
            Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

/// Wakes a thread blocked in [`Poller::wait`]: register it with
/// [`Waker::register`] (or `Poller::add`), call [`Waker::wake`] from any
/// thread (share it in an `Arc`), and [`Waker::drain`] it when its token
/// comes up, or it stays readable (level-triggered).
#[derive(Debug)]
pub struct Waker {
    fd: EventFd,
}

impl Waker {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Waker> {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Waker { fd })
    }

    /// Registers with `poller` under `token`.
    pub fn register(&self, poller: &Poller, token: u64) -> io::Result<()> {
        poller.add(self, token)
    }

    /// Makes the poller's wait return. Several wakes before a drain count as
    /// one.
    pub fn wake(&self) -> io::Result<()> {
        match self.fd.write(1) {
            // The counter is at its maximum: already awake.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Resets the eventfd so it is no longer readable. Returns true if it
    /// had been woken.
    pub fn drain(&self) -> io::Result<bool> {
        match self.fd.read() {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sys::udp::{bind_udp, UdpOptions};
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn times_out_with_nothing_ready() {
        let p = Poller::new().unwrap();
        let mut ev = Events::with_capacity(8);
        let t0 = Instant::now();
        assert_eq!(
            p.wait(&mut ev, Some(Duration::from_micros(300))).unwrap(),
            0
        );
        assert!(
            t0.elapsed() >= Duration::from_micros(300),
            "rounded up, not down"
        );
        assert!(ev.is_empty());
    }

    #[test]
    fn wakes_on_waker_from_another_thread() {
        let p = Poller::new().unwrap();
        let w = Arc::new(Waker::new().unwrap());
        w.register(&p, 7).unwrap();
        assert!(!w.drain().unwrap());
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w2.wake().unwrap();
            w2.wake().unwrap();
        });
        let mut ev = Events::with_capacity(8);
        let n = p.wait(&mut ev, Some(Duration::from_secs(10))).unwrap();
        t.join().unwrap();
        assert_eq!(n, 1);
        let e = ev.iter().next().unwrap();
        assert_eq!((e.token, e.readable), (7, true));
        // Level-triggered: still ready until drained.
        assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 1);
        assert!(w.drain().unwrap());
        assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn wakes_on_readable_udp_socket_and_stops_after_delete() {
        let p = Poller::new().unwrap();
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let rx = bind_udp(local, UdpOptions::default()).unwrap();
        let w = Waker::new().unwrap();
        w.register(&p, 1).unwrap();
        p.add(&rx, 2).unwrap();
        let mut ev = Events::with_capacity(8);
        assert_eq!(p.wait(&mut ev, Some(Duration::from_millis(10))).unwrap(), 0);

        let tx = UdpSocket::bind(local).unwrap();
        tx.send_to(b"ping", rx.local_addr().unwrap()).unwrap();
        let n = p.wait(&mut ev, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(n, 1);
        let e = ev.iter().next().unwrap();
        assert_eq!(
            (e.token, e.readable, e.error, e.hangup),
            (2, true, false, false)
        );
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv(&mut buf).unwrap(), 4);
        assert_eq!(p.wait(&mut ev, Some(Duration::ZERO)).unwrap(), 0);

        // Writable interest: an idle UDP socket can always send.
        p.modify(&rx, 3, Interest::BOTH).unwrap();
        p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.iter().any(|e| e.token == 3 && e.writable && !e.readable));

        p.delete(&rx).unwrap();
        tx.send_to(b"ping", rx.local_addr().unwrap()).unwrap();
        assert_eq!(p.wait(&mut ev, Some(Duration::from_millis(20))).unwrap(), 0);
        assert_eq!(
            p.delete(&rx).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
    }
}
