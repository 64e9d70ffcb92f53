//! The destination guard: postbacks reach public addresses only, unless the
//! `ALLOW_PRIVATE_TARGETS` setting says otherwise. The sender applies `is_public_ip` to
//! every address it is about to connect to (after DNS), so DNS rebinding cannot slip
//! through a check made earlier on a name.

use std::net::IpAddr;

/// True for globally routable unicast addresses. False for loopback, private (RFC 1918),
/// link-local (incl. 169.254.169.254 metadata), CGNAT (100.64/10), multicast,
/// broadcast, unspecified, documentation, benchmarking, reserved, IPv6 unique-local,
/// link-local, site-local, IPv4-mapped/compatible/NAT64/6to4 forms of any of those.
pub fn is_public_ip(ip: IpAddr) -> bool {
    todo!("is_public_ip")
}

/// Check a rendered destination URL before sending: scheme http/https, a host, no
/// userinfo smuggling, and when the host is an IP literal it must be public unless
/// `allow_private`. Returns the reason on refusal.
pub fn check_url(url: &url::Url, allow_private: bool) -> Result<(), String> {
    todo!("check_url")
}
