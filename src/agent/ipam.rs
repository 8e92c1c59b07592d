//! Address allocation in the node's subnet: .1 is the gateway, .2 the host
//! port, pods get .3 upward (lowest free first). In memory: the agent
//! persists the attachments that hold the addresses ([`super::store`]) and
//! rebuilds this allocator from them on start.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use encap::Cidr;

/// Why an address could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every pod address is taken.
    #[error("no free address left in {0}")]
    Exhausted(Cidr),
    /// The requested address is outside the pod range of the subnet.
    #[error("{ip} is not a pod address of {subnet} (pods use .3 to the address before broadcast)")]
    OutOfRange {
        /// What was asked for.
        ip: Ipv4Addr,
        /// The subnet.
        subnet: Cidr,
    },
    /// The requested address is taken.
    #[error("{0} is already assigned")]
    InUse(Ipv4Addr),
}

/// First host number given to pods.
pub const FIRST_POD: u32 = 3;

/// The allocator.
#[derive(Debug)]
pub struct Ipam {
    subnet: Cidr,
    used: BTreeSet<u32>,
}

impl Ipam {
    /// An allocator for `subnet` with nothing assigned.
    pub fn new(subnet: Cidr) -> Ipam {
        Ipam {
            subnet,
            used: BTreeSet::new(),
        }
    }

    fn host(&self, ip: Ipv4Addr) -> Option<u32> {
        let last = !self.subnet.mask(); // the broadcast host number
        let h = u32::from(ip).wrapping_sub(u32::from(self.subnet.addr()));
        (self.subnet.contains(ip) && h >= FIRST_POD && h < last).then_some(h)
    }

    /// Assigns `want`, or the lowest free address.
    pub fn allocate(&mut self, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, IpamError> {
        let h = match want {
            Some(ip) => {
                let h = self.host(ip).ok_or(IpamError::OutOfRange {
                    ip,
                    subnet: self.subnet,
                })?;
                if self.used.contains(&h) {
                    return Err(IpamError::InUse(ip));
                }
                h
            }
            None => {
                let last = !self.subnet.mask();
                (FIRST_POD..last)
                    .find(|h| !self.used.contains(h))
                    .ok_or(IpamError::Exhausted(self.subnet))?
            }
        };
        self.used.insert(h);
        Ok(Ipv4Addr::from(u32::from(self.subnet.addr()) + h))
    }

    /// Frees an address; false if it was not assigned.
    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.host(ip).is_some_and(|h| self.used.remove(&h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_reuse() {
        let mut i = Ipam::new(Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap());
        assert_eq!(i.allocate(None), Ok(Ipv4Addr::new(10, 244, 1, 3)));
        assert_eq!(i.allocate(None), Ok(Ipv4Addr::new(10, 244, 1, 4)));
        assert!(i.release(Ipv4Addr::new(10, 244, 1, 3)));
        assert!(!i.release(Ipv4Addr::new(10, 244, 1, 3)));
        assert_eq!(i.allocate(None), Ok(Ipv4Addr::new(10, 244, 1, 3)));
        assert_eq!(
            i.allocate(Some(Ipv4Addr::new(10, 244, 1, 200))),
            Ok(Ipv4Addr::new(10, 244, 1, 200))
        );
        assert_eq!(
            i.allocate(Some(Ipv4Addr::new(10, 244, 1, 200))),
            Err(IpamError::InUse(Ipv4Addr::new(10, 244, 1, 200)))
        );
        for bad in [
            [10, 244, 1, 1],
            [10, 244, 1, 2],
            [10, 244, 1, 255],
            [10, 244, 2, 5],
        ] {
            assert!(
                matches!(
                    i.allocate(Some(bad.into())),
                    Err(IpamError::OutOfRange { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn exhaustion() {
        let mut i = Ipam::new(Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 29).unwrap());
        for d in 3..7 {
            assert_eq!(i.allocate(None), Ok(Ipv4Addr::new(10, 0, 0, d)));
        }
        assert!(matches!(i.allocate(None), Err(IpamError::Exhausted(_))));
    }
}
