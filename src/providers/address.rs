//! Which addresses an upstream named by a token may have.
//!
//! The CyberScan host comes from the token, not from the operator, so by
//! default the relay only connects it to public addresses: a token must not be
//! able to aim the relay at its own network (loopback, private ranges,
//! link-local cloud metadata services, …). Names are checked after resolution,
//! in the client's resolver, so a name cannot point somewhere else at connect
//! time; addresses written as IP literals are checked before any request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
                || (segments[0] == 0x0064 && segments[1] == 0xff9b && segments[2] == 1)) // NAT64 local-use 64:ff9b:1::/48
        }
    }
}

/// The machine behind an address, as far as an address tells: what a caller
/// cannot respell. An IPv4 address is one machine, whether written as IPv4,
/// IPv4-mapped, IPv4-compatible or NAT64 IPv6; an IPv6 address stands for its
/// /64 network, which one machine can hold whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Machine {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6(u64),
    /// A name the relay does not resolve itself (calls through a proxy,
    /// `CYBERSCAN_USE_PROXY`): a keyed hash of it, lowercased, without a
    /// trailing dot.
    Named(u64),
}

impl Machine {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => match embedded_v4(v6) {
                Some(v4) => Self::V4(v4),
                None if v6.is_loopback() => Self::V4(Ipv4Addr::LOCALHOST),
                None => Self::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (b & 0xc0) == 64) // carrier-grade NAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18.0.0/15
        || a >= 240) // reserved
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible or NAT64 IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = ip.segments();
    let nat64 = segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0];
    let compatible =
        segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified();
    if nat64 || compatible {
        let [.., high, low] = segments;
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The guard's refusal: `host` (as the caller wrote it) has no public address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to no public address")]
pub struct NotPublic {
    pub host: String,
}

/// A resolver that drops every non-public address a name resolves to; a name
/// with none left fails to resolve, with [`NotPublic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() {
                tracing::warn!(host, "refused: the host resolves to no public address");
                return Err(
                    Box::new(NotPublic { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(text: &str) -> bool {
        is_public(text.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1",
        ] {
            assert!(!public(address), "{address}");
        }
    }

    #[test]
    fn internet_addresses_are_public() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(public(address), "{address}");
        }
    }

    #[test]
    fn one_machine_however_its_address_is_written() {
        let machine = |text: &str| Machine::of(text.parse().unwrap());
        let v4 = machine("127.0.0.1");
        for same in ["::ffff:127.0.0.1", "::1", "64:ff9b::7f00:1", "::127.0.0.1"] {
            assert_eq!(machine(same), v4, "{same}");
        }
        assert_ne!(machine("127.0.0.2"), v4);
        assert_eq!(
            machine("2606:4700:4700::1111"),
            machine("2606:4700:4700::ffff:1"),
            "one /64"
        );
        assert_ne!(
            machine("2606:4700:4700::1111"),
            machine("2606:4700:4701::1")
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_internal_addresses() {
        let name: Name = "localhost".parse().unwrap();
        assert!(PublicOnlyResolver.resolve(name).await.is_err());
    }
}
