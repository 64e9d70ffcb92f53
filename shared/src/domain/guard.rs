//! The destination guard: postbacks reach public addresses only, unless the
//! `ALLOW_PRIVATE_TARGETS` setting says otherwise. The sender applies `is_public_ip` to
//! every address it is about to connect to (after DNS), so DNS rebinding cannot slip
//! through a check made earlier on a name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 blocks that are not globally reachable unicast (IANA special-purpose registry).
pub const REFUSED_V4: &[Ipv4Net] = &[
    v4(0, 0, 0, 0, 8),          // "this network", incl. 0.0.0.0
    v4(10, 0, 0, 0, 8),         // RFC 1918 private
    v4(100, 64, 0, 0, 10),      // CGNAT shared address space
    v4(127, 0, 0, 0, 8),        // loopback
    v4(169, 254, 0, 0, 16),     // link-local, incl. cloud metadata 169.254.169.254
    v4(172, 16, 0, 0, 12),      // RFC 1918 private
    v4(192, 0, 0, 0, 24),       // IETF protocol assignments
    v4(192, 0, 2, 0, 24),       // TEST-NET-1 documentation
    v4(192, 88, 99, 0, 24),     // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),     // RFC 1918 private
    v4(198, 18, 0, 0, 15),      // benchmarking
    v4(198, 51, 100, 0, 24),    // TEST-NET-2 documentation
    v4(203, 0, 113, 0, 24),     // TEST-NET-3 documentation
    v4(224, 0, 0, 0, 4),        // multicast
    v4(240, 0, 0, 0, 4),        // reserved
    v4(255, 255, 255, 255, 32), // limited broadcast (inside 240/4, listed for clarity)
];

/// IPv6 blocks refused outright. The forms that embed an IPv4 address (mapped, NAT64,
/// 6to4) are not here: they are judged by the IPv4 address they carry.
pub const REFUSED_V6: &[Ipv6Net] = &[
    v6(0, 0, 0, 0, 0, 0, 0, 0, 96), // ::/96: unspecified, loopback, deprecated IPv4-compatible
    v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48), // local-use NAT64
    v6(0x100, 0, 0, 0, 0, 0, 0, 0, 64), // discard-only
    v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23), // IETF protocol assignments (Teredo, benchmarking, ORCHID...)
    v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), // documentation
    v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), // documentation (RFC 9637)
    v6(0xfc00, 0, 0, 0, 0, 0, 0, 0, 7), // unique-local
    v6(0xfe80, 0, 0, 0, 0, 0, 0, 0, 10), // link-local
    v6(0xfec0, 0, 0, 0, 0, 0, 0, 0, 10), // deprecated site-local
    v6(0xff00, 0, 0, 0, 0, 0, 0, 0, 8), // multicast
];

const V4_MAPPED: Ipv6Net = v6(0, 0, 0, 0, 0, 0xffff, 0, 0, 96);
const NAT64: Ipv6Net = v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0, 96);
const SIX_TO_FOUR: Ipv6Net = v6(0x2002, 0, 0, 0, 0, 0, 0, 0, 16);
/// Only this block is allocated for global unicast; the rest of the IPv6 space is
/// reserved and not routed on the internet.
const GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);

/// True for globally routable unicast addresses. False for loopback, private (RFC 1918),
/// link-local (incl. 169.254.169.254 metadata), CGNAT (100.64/10), multicast,
/// broadcast, unspecified, documentation, benchmarking, reserved, IPv6 unique-local,
/// link-local, site-local, IPv4-mapped/compatible/NAT64/6to4 forms of any of those.
///
/// Deliberately strict: all of 2001::/23 is refused (its few globally reachable
/// sub-blocks are infrastructure, not postback receivers), as is every IPv6 address
/// outside 2000::/3 other than the IPv4-mapped and NAT64 forms.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !REFUSED_V4.iter().any(|net| net.contains(&ip))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    // The low 32 bits of the mapped and NAT64 forms are the IPv4 address reached.
    if V4_MAPPED.contains(&ip) || NAT64.contains(&ip) {
        return is_public_v4(Ipv4Addr::from(bits as u32));
    }
    // 6to4 embeds the IPv4 address of the relay in bits 16..48.
    if SIX_TO_FOUR.contains(&ip) {
        return is_public_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    GLOBAL_UNICAST.contains(&ip) && !REFUSED_V6.iter().any(|net| net.contains(&ip))
}

/// Check a rendered destination URL before sending: scheme http/https, a host, no
/// userinfo smuggling, and when the host is an IP literal it must be public unless
/// `allow_private`. Returns the reason on refusal.
///
/// The `url` crate has already normalised odd IPv4 spellings (`http://2130706433/`,
/// `http://0x7f.1/`) into `Host::Ipv4`, so they are judged as the address they are.
/// Host names are judged after DNS, by the sender's resolver.
pub fn check_url(url: &url::Url, allow_private: bool) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme {other:?} is not allowed (only http and https)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL (user:password@) are not allowed; use a header".into());
    }
    let ip = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Domain("")) => return Err("the URL has no host".into()),
        Some(url::Host::Domain(_)) => return Ok(()),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    if allow_private || is_public_ip(ip) {
        Ok(())
    } else {
        Err(format!("{ip} is not a public address (private, loopback, link-local or reserved)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_well_known_non_public_addresses() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2002:a9fe:a9fe::",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "4000::1",
            "8000::1",
            "1::1",
        ] {
            assert!(!is_public_ip(ip(s)), "{s} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.88.98.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
        ] {
            assert!(is_public_ip(ip(s)), "{s} should be allowed");
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn check_url_refuses_private_literals_in_every_spelling() {
        for s in [
            "http://127.0.0.1/",
            "http://127.0.0.1:8080/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "https://10.0.0.1/",
            "http://0/",
            "http://127.0.0.1./",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
        ] {
            let u = url(s);
            assert!(check_url(&u, false).is_err(), "{s} should be refused");
            assert!(check_url(&u, true).is_ok(), "{s} should be allowed with allow_private");
        }
    }

    #[test]
    fn check_url_rules_independent_of_address() {
        assert!(check_url(&url("https://example.com/pb?x=1"), false).is_ok());
        assert!(check_url(&url("http://8.8.8.8/"), false).is_ok());
        assert!(check_url(&url("http://[2606:4700:4700::1111]/"), false).is_ok());
        for s in ["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "data:text/plain,hi"] {
            assert!(check_url(&url(s), true).is_err(), "{s}: scheme must be refused");
        }
        for s in ["http://user@example.com/", "http://user:pw@example.com/", "http://:pw@example.com/"] {
            assert!(check_url(&url(s), true).is_err(), "{s}: userinfo must be refused");
        }
    }

    fn refused_v4() -> impl Strategy<Value = Ipv4Addr> {
        (0..REFUSED_V4.len(), any::<u32>()).prop_map(|(i, r)| {
            let net = REFUSED_V4[i];
            let host_mask = u32::from(net.hostmask());
            Ipv4Addr::from(u32::from(net.network()) | (r & host_mask))
        })
    }

    fn refused_v6() -> impl Strategy<Value = Ipv6Addr> {
        (0..REFUSED_V6.len(), any::<u128>()).prop_map(|(i, r)| {
            let net = REFUSED_V6[i];
            let host_mask = u128::from(net.hostmask());
            Ipv6Addr::from(u128::from(net.network()) | (r & host_mask))
        })
    }

    proptest! {
        #[test]
        fn every_address_in_a_refused_v4_block_is_refused(a in refused_v4()) {
            prop_assert!(!is_public_ip(IpAddr::V4(a)));
            // ... and so are its IPv6 disguises.
            let bits = u32::from(a);
            prop_assert!(!is_public_ip(IpAddr::V6(a.to_ipv6_mapped())));
            prop_assert!(!is_public_ip(IpAddr::V6(a.to_ipv6_compatible())));
            prop_assert!(!is_public_ip(IpAddr::V6(Ipv6Addr::from(u128::from(NAT64.network()) | u128::from(bits)))));
            let six_to_four = u128::from(SIX_TO_FOUR.network()) | (u128::from(bits) << 80) | 1;
            prop_assert!(!is_public_ip(IpAddr::V6(Ipv6Addr::from(six_to_four))));
        }

        #[test]
        fn every_address_in_a_refused_v6_block_is_refused(a in refused_v6()) {
            prop_assert!(!is_public_ip(IpAddr::V6(a)));
        }

        #[test]
        fn v4_outside_refused_blocks_is_public_in_every_form(bits in any::<u32>()) {
            let a = Ipv4Addr::from(bits);
            prop_assume!(!REFUSED_V4.iter().any(|n| n.contains(&a)));
            // Cross-check against the standard library's own classification.
            prop_assert!(!a.is_private() && !a.is_loopback() && !a.is_link_local() && !a.is_multicast());
            prop_assert!(is_public_ip(IpAddr::V4(a)));
            prop_assert!(is_public_ip(IpAddr::V6(a.to_ipv6_mapped())));
            prop_assert!(is_public_ip(IpAddr::V6(Ipv6Addr::from(u128::from(NAT64.network()) | u128::from(bits)))));
            // The deprecated IPv4-compatible form is refused whatever it embeds.
            prop_assert!(!is_public_ip(IpAddr::V6(a.to_ipv6_compatible())));
        }

        #[test]
        fn global_unicast_v6_outside_refused_blocks_is_public(r in any::<u128>()) {
            // Force into 2000::/3, then skip the refused and embedded-v4 blocks.
            let a = Ipv6Addr::from((r & (u128::MAX >> 3)) | (1u128 << 125));
            prop_assume!(!REFUSED_V6.iter().any(|n| n.contains(&a)) && !SIX_TO_FOUR.contains(&a));
            prop_assert!(is_public_ip(IpAddr::V6(a)));
            prop_assert!(!a.is_loopback() && !a.is_multicast() && !a.is_unspecified());
        }
    }
}
