//! The silo key of an AoR with this Kamailio's settings (tsilo's `use_domain`, the registrar's
//! `case_sensitive` and `realm_prefix`; the rules themselves are `crate::aor`), and the URI of
//! an AoR as usrloc names it.

use super::config::use_domain;
use crate::aor::{AorRules, escape_user};
use crate::kam::str::show;
use crate::kam::uri::SipUri;
use crate::kam::{registrar, usrloc};
use std::borrow::Cow;

/// The silo key of a SIP URI: the AoR the registrar would file it under (crate::aor::key):
/// its user part, unescaped, lower-cased unless the registrar is `case_sensitive`; with
/// `use_domain`, `user@host`, the host in lower case and without the registrar's
/// `realm_prefix`. So the key does not depend on the port, parameters, scheme, escaping or case
/// a Request-URI carries, and a store (R-URI), `ts_append("$tu")` (To) and auto_append
/// (usrloc's AoR, see `lookup_uri`) derive one key for one AoR: the alternative,
/// comparing each side differently, would need the registrar's rules on every side anyway.
/// Err says why there is none.
pub fn key_of_uri(uri: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    let parsed = SipUri::parse(uri).ok_or("bad uri")?;
    let (user, host) = (parsed.user(), parsed.host());
    if !use_domain() && user.is_empty() {
        return Err("malformed aor: no user part");
    }
    let reg = registrar::aor_settings();
    let rules = AorRules { case_sensitive: reg.case_sensitive, realm_prefix: &reg.realm_prefix };
    Ok(Cow::Owned(crate::aor::key(user, use_domain().then_some(host), rules)))
}

/// `key_of_uri`, logging why a URI has no key.
pub fn aor_key(uri: &[u8]) -> Option<Cow<'_, [u8]>> {
    key_of_uri(uri).map_err(|why| lm_err!("{why} [{}]", show(uri))).ok()
}

/// usrloc's AoR (`user`, or `user@domain` with usrloc's use_domain) as a SIP URI for the
/// registrar's lookup and for `key_of_uri`; without a domain any host does (the registrar then
/// keys by the user alone). usrloc keeps the user unescaped (the registrar unescapes it), so it
/// is escaped again: a user with `@` or `%` must come back as itself. With use_domain the user
/// ends at the last `@` (a domain has none); the domain is already without the realm prefix
/// (stripping it again only matters for a domain that starts with the prefix twice, which the
/// registrar's own lookup of that AoR strips again too).
pub fn lookup_uri(aor: &[u8]) -> Vec<u8> {
    let (user, host) = match aor.iter().rposition(|&c| c == b'@') {
        Some(at) if usrloc::use_domain() => (&aor[..at], &aor[at + 1..]),
        _ if usrloc::use_domain() => (&b""[..], aor),
        _ => (aor, &b"invalid"[..]),
    };
    let user = escape_user(user);
    let at = if user.is_empty() { &b""[..] } else { b"@" };
    [b"sip:".as_slice(), &user, at, host].concat()
}
