//! The routes running in this process, as the core's pre- and post-script callbacks report them:
//! which frames end when a route starts or ends, also when a route's end never came (a module's
//! pre-script callback stopped the message after ours ran, an error path). Pure bookkeeping: the
//! caller lands what ends (module/route_frames.rs).

/// Which routes the core reports (kam::script_cb maps its flags to these).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RouteKind {
    /// request_route of a received request (receive_msg), or of a module's own request.
    Request,
    /// failure_route, and the route t_continue() runs.
    Failure,
}

/// Failure routes nest in other routes (t_continue() and t_relay()'s failures may run routes
/// from inside one): beyond this depth the oldest frames end, their end never having come.
pub const MAX_DEPTH: usize = 16;

/// A stack of route frames, newest last.
pub struct Routes<F> {
    frames: Vec<(RouteKind, F)>,
}

impl<F> Default for Routes<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> Routes<F> {
    pub const fn new() -> Self {
        Routes { frames: Vec::new() }
    }

    /// A route of `kind` starts with `frame`. Returns the frames that end now, oldest first:
    /// for a request route every open one (request routes do not nest: those are routes whose
    /// end never came), otherwise the oldest beyond `MAX_DEPTH`.
    #[must_use]
    pub fn start(&mut self, kind: RouteKind, frame: F) -> Vec<F> {
        let stale = if kind == RouteKind::Request {
            self.frames.len()
        } else {
            (self.frames.len() + 1).saturating_sub(MAX_DEPTH)
        };
        let ended = self.frames.drain(..stale).map(|(_, f)| f).collect();
        self.frames.push((kind, frame));
        ended
    }

    /// A route of `kind` ended: the newest frame of that kind ends, with the newer frames (of
    /// the other kind: their end never came). Returned newest first; none if no such frame.
    #[must_use]
    pub fn end(&mut self, kind: RouteKind) -> Vec<F> {
        match self.frames.iter().rposition(|(k, _)| *k == kind) {
            Some(i) => self.frames.split_off(i).into_iter().rev().map(|(_, f)| f).collect(),
            None => Vec::new(),
        }
    }

    pub fn top(&self) -> Option<&F> {
        self.frames.last().map(|(_, f)| f)
    }

    pub fn top_mut(&mut self) -> Option<&mut F> {
        self.frames.last_mut().map(|(_, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RouteKind::{Failure, Request};

    #[test]
    fn a_route_ends_with_the_routes_nested_in_it() {
        let mut r = Routes::new();
        assert!(r.start(Request, "request").is_empty());
        assert!(r.start(Failure, "failure").is_empty());
        assert_eq!(r.top(), Some(&"failure"));
        assert_eq!(r.end(Failure), ["failure"]);
        assert_eq!(r.top(), Some(&"request"));
        // A failure route whose end never came ends with the request route around it.
        assert!(r.start(Failure, "lost failure").is_empty());
        assert_eq!(r.end(Request), ["lost failure", "request"]);
        assert!(r.top().is_none());
        assert!(r.end(Failure).is_empty(), "nothing open: nothing ends");
    }

    #[test]
    fn a_request_route_whose_end_never_came_ends_when_the_next_one_starts() {
        let mut r = Routes::new();
        assert!(r.start(Request, 1).is_empty());
        assert!(r.start(Failure, 2).is_empty());
        // The post-script callbacks never came: the next message's route closes both, oldest first.
        assert_eq!(r.start(Request, 3), [1, 2]);
        assert_eq!(r.end(Request), [3]);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut r = Routes::new();
        assert!(r.start(Request, 0).is_empty());
        for i in 1..MAX_DEPTH {
            assert!(r.start(Failure, i).is_empty());
        }
        assert_eq!(r.start(Failure, MAX_DEPTH), [0], "the oldest frame ends beyond the depth");
        assert_eq!(r.end(Failure).len(), 1);
    }
}
