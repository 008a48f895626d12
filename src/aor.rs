//! The silo key of an AoR, built the way Kamailio's registrar names an AoR (registrar's
//! `extract_aor()`), so that a key made from a call's Request-URI (ts_store), from a REGISTER's
//! To URI (ts_append) and from usrloc's AoR (auto_append) are one key whenever the registrar
//! would file them under one AoR. Pure Rust: the registrar's settings come in as `AorRules`.

use std::borrow::Cow;

/// The registrar settings that shape an AoR (modparams `case_sensitive` and `realm_prefix`).
#[derive(Clone, Copy, Default)]
pub struct AorRules<'a> {
    /// Keep the user part's case (the host is always lower-cased).
    pub case_sensitive: bool,
    /// Stripped from the front of the host (only when the key has one).
    pub realm_prefix: &'a [u8],
}

/// The key of a URI's `user` and, with use_domain, `host`: the user unescaped (%xx; a user the
/// registrar could not unescape is kept as it is: the registrar refuses it, so it has no AoR to
/// meet), then `@` and the host without the realm prefix (if the host is longer than it), then
/// lower-cased as the registrar does: all of it, or the host only when case-sensitive.
pub fn key(user: &[u8], host: Option<&[u8]>, rules: AorRules) -> Vec<u8> {
    let user = unescape(user).unwrap_or(Cow::Borrowed(user));
    let mut key = Vec::with_capacity(user.len() + 1 + host.map_or(0, <[u8]>::len));
    key.extend_from_slice(&user);
    if let Some(host) = host {
        if !user.is_empty() {
            key.push(b'@');
        }
        // As the registrar: compared before lower-casing, so case-sensitive.
        let p = rules.realm_prefix;
        let host = if !p.is_empty() && p.len() < host.len() && host.starts_with(p) { &host[p.len()..] } else { host };
        key.extend_from_slice(host);
    }
    let keep = if rules.case_sensitive && !user.is_empty() { user.len() } else { 0 };
    key[keep..].make_ascii_lowercase();
    key
}

/// `%xx` sequences decoded; None where Kamailio's `un_escape()` fails (a short or non-hex
/// sequence, or a character outside printable ASCII).
pub fn unescape(user: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !user.contains(&b'%') {
        return Some(Cow::Borrowed(user));
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(user.len());
    let mut i = 0;
    while i < user.len() {
        if user[i] == b'%' {
            let (hi, lo) = (hex(*user.get(i + 1)?)?, hex(*user.get(i + 2)?)?);
            let c = (hi << 4) | lo;
            if !(32..=126).contains(&c) {
                return None;
            }
            out.push(c);
            i += 3;
        } else {
            out.push(user[i]);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

/// A user part (as usrloc keeps it: unescaped) escaped again for a SIP URI, so that the URI
/// parses and unescapes back to it: printable characters outside RFC 3261's unreserved and a
/// few user-unreserved ones (`@`, `%`, `;`, `?`, `:`, spaces, ...) become `%xx`.
pub fn escape_user(user: &[u8]) -> Cow<'_, [u8]> {
    let plain = |c: u8| !(32..=126).contains(&c) || c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,/".contains(&c);
    if user.iter().all(|&c| plain(c)) {
        return Cow::Borrowed(user);
    }
    let mut out = Vec::with_capacity(user.len() + 8);
    for &c in user {
        if plain(c) {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: AorRules = AorRules { case_sensitive: false, realm_prefix: b"" };

    #[test]
    fn as_the_registrar_names_it() {
        assert_eq!(key(b"BoB", None, DEFAULT), b"bob");
        assert_eq!(key(b"BoB", None, AorRules { case_sensitive: true, ..DEFAULT }), b"BoB");
        assert_eq!(key(b"BoB", Some(b"Ex.COM"), AorRules { case_sensitive: true, ..DEFAULT }), b"BoB@ex.com");
        assert_eq!(key(b"%62ob%40home", None, DEFAULT), b"bob@home");
        assert_eq!(key(b"", Some(b"Ex.com"), DEFAULT), b"ex.com");
        let sip = AorRules { realm_prefix: b"sip.", ..DEFAULT };
        assert_eq!(key(b"bob", Some(b"sip.Example.com"), sip), b"bob@example.com");
        // Shorter or equal, or a prefix in another case: kept, as the registrar does.
        assert_eq!(key(b"bob", Some(b"sip."), sip), b"bob@sip.");
        assert_eq!(key(b"bob", Some(b"SIP.example.com"), sip), b"bob@sip.example.com");
        // Without a host the prefix does not apply.
        assert_eq!(key(b"sip.bob", None, sip), b"sip.bob");
    }

    #[test]
    fn unescape_fails_where_kamailio_does() {
        assert_eq!(unescape(b"a%2").as_deref(), None);
        assert_eq!(unescape(b"a%zz").as_deref(), None);
        assert_eq!(unescape(b"a%0A").as_deref(), None);
        assert_eq!(unescape(b"a%2Bb").as_deref(), Some(&b"a+b"[..]));
        // A user the registrar refuses keeps its own key.
        assert_eq!(key(b"A%2", None, DEFAULT), b"a%2");
    }

    #[test]
    fn escaping_round_trips() {
        for user in [&b"bob"[..], b"bob@home", b"100%", b"a;b?c:d e", b"+49-30(1)"] {
            assert_eq!(unescape(&escape_user(user)).unwrap(), user);
        }
        assert_eq!(escape_user(b"bob@home").as_ref(), b"bob%40home");
    }
}
