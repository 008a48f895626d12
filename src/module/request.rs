//! What an append asks for: where its branches come from (a registrar lookup, or the
//! destination set the script built), which contacts it admits, and its encoding as a request
//! left on a transaction in flight (or kept as a miss for a catch-up), carried out later by
//! another process or route.

use crate::kam::dset::DsetSnapshot;
use crate::kam::str::show;
use crate::kam::msg::Msg;
use std::ffi::{CStr, CString};

/// Where the new branches come from.
pub enum Branches<'a> {
    /// The contacts registered in `table` for `uri` (default: the transaction's R-URI).
    Lookup { table: &'a CStr, uri: Option<&'a [u8]> },
    /// The destination set the script built for the current request.
    Dset(&'a DsetSnapshot),
}

/// Which of the contacts found an append adds.
#[derive(Clone, Copy)]
pub enum Only<'a> {
    /// Every one (that has no branch yet).
    Every,
    /// Those TM's filter matches: `contact` is a substring of the contact URI (ts_append_by_contact).
    Matching(&'a CStr),
}

impl<'a> From<Option<&'a CStr>> for Only<'a> {
    fn from(contact: Option<&'a CStr>) -> Only<'a> {
        contact.map_or(Only::Every, Only::Matching)
    }
}

impl Only<'_> {
    pub fn admits(&self, uri: &[u8]) -> bool {
        match *self {
            Only::Every => true,
            Only::Matching(c) => c.is_empty() || uri.windows(c.to_bytes().len()).any(|w| w == c.to_bytes()),
        }
    }
}

/// `ts_append_by_contact`: the contact must be a SIP URI; TM matches it as a substring of each
/// registered contact, so it is passed NUL-terminated.
pub fn contact_filter(contact: &[u8]) -> Option<CString> {
    if crate::kam::uri::SipUri::parse(contact).is_none() {
        lm_err!("bad contact uri [{}]", show(contact));
        return None;
    }
    match CString::new(contact) {
        Ok(c) => Some(c),
        Err(_) => {
            lm_err!("contact uri contains a NUL byte");
            None
        }
    }
}

/// A table name from the script or KEMI, NUL-terminated for usrloc; None (logged) if empty.
pub fn table_name(table: &[u8]) -> Option<CString> {
    match CString::new(table) {
        Ok(t) if !t.is_empty() => Some(t),
        _ => {
            lm_err!("invalid table name [{}]", show(table));
            None
        }
    }
}

/// The contact filter of ts_append_by_contact without a contact: the request's own (the
/// REGISTER's first Contact). The appends themselves work on each stored transaction's request.
pub fn contact_of_register(msg: Msg) -> Option<CString> {
    match msg.first_contact_uri() {
        Ok(uri) => contact_filter(uri),
        Err(why) => {
            lm_warn!("ts_append_by_contact: {why}");
            None
        }
    }
}

/// An append request, owned, as kept on a transaction in flight.
pub struct Request {
    source: Source,
    contact: Option<CString>,
}

enum Source {
    Lookup { table: CString, uri: Option<Vec<u8>> },
    Dset(DsetSnapshot),
}

impl Request {
    /// What the append asks for, as when it was made.
    pub fn branches(&self) -> Branches<'_> {
        match &self.source {
            Source::Lookup { table, uri } => Branches::Lookup { table, uri: uri.as_deref() },
            Source::Dset(set) => Branches::Dset(set),
        }
    }

    pub fn only(&self) -> Only<'_> {
        self.contact.as_deref().into()
    }
}

// The encoding: a tag byte, then length-prefixed fields. It never leaves this Kamailio.
const LOOKUP: u8 = 0;
const DSET: u8 = 1;

fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u32).to_ne_bytes());
            out.extend_from_slice(b);
        }
    }
}

fn get<'a>(input: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let (&present, rest) = input.split_first()?;
    *input = rest;
    if present == 0 {
        return Some(None);
    }
    let len = u32::from_ne_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let field = input.get(4..4 + len)?;
    *input = &input[4 + len..];
    Some(Some(field))
}

/// The bytes that `decode` turns back into this append.
pub fn encode(branches: &Branches, only: Only) -> Vec<u8> {
    let mut out = Vec::new();
    match branches {
        Branches::Lookup { table, uri } => {
            out.push(LOOKUP);
            put(&mut out, Some(table.to_bytes()));
            put(&mut out, *uri);
        }
        Branches::Dset(set) => {
            out.push(DSET);
            put(&mut out, Some(&set.to_bytes()));
        }
    }
    put(&mut out, match only {
        Only::Every => None,
        Only::Matching(c) => Some(c.to_bytes()),
    });
    out
}

pub fn decode(mut input: &[u8]) -> Option<Request> {
    let (&tag, rest) = input.split_first()?;
    input = rest;
    let source = match tag {
        LOOKUP => {
            let table = CString::new(get(&mut input)??).ok()?;
            let uri = get(&mut input)?.map(<[u8]>::to_vec);
            Source::Lookup { table, uri }
        }
        DSET => Source::Dset(DsetSnapshot::from_bytes(get(&mut input)??)?),
        _ => return None,
    };
    let contact = get(&mut input)?.map(CString::new).transpose().ok()?;
    input.is_empty().then_some(Request { source, contact })
}
