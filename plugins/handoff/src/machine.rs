//! The handoff state machine, pure: sessions with versioned state, switches
//! that try devices one after another, and each session's log. Times are
//! milliseconds since the epoch, given by the caller.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest session state, as JSON text.
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// One application session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Id.
    pub id: String,
    /// Application id or URL.
    pub app: String,
    /// The device that holds it.
    pub holder: String,
    /// Increases with every progress update; starts at 1.
    pub version: u64,
    /// The application's state.
    pub state: Value,
}

/// How a switch ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchStatus {
    /// Offered to `to`, waiting for its answer.
    Offered,
    /// `to` holds the session now.
    Accepted,
    /// Nobody took it: the holder keeps the session.
    Unplaced,
}

/// One device's answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tried {
    /// The device offered to.
    pub device: String,
    /// `accepted`, `declined: <reason>` or `expired`.
    pub answer: String,
    /// When it answered (or the offer expired).
    pub at: u64,
}

/// A request to move a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// Id.
    pub id: String,
    /// The session.
    pub session_id: String,
    /// The holder when it was asked.
    pub from: String,
    /// Current status.
    pub status: SwitchStatus,
    /// The device offered to now (the last one, once it ends).
    pub to: Option<String>,
    /// Earlier offers and their answers.
    pub tried: Vec<Tried>,
    /// When the current offer expires.
    pub expires_at: u64,
}

/// The devices a switch may go to, as the control list shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Id.
    pub id: String,
    /// Apps or activity types it can continue.
    pub capabilities: Vec<String>,
    /// Holds its stream or was seen recently.
    pub active: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The state's JSON is larger than [`MAX_STATE_BYTES`] (413).
    StateTooLarge(usize),
    /// A progress update based on an older version (409).
    StaleVersion {
        /// The version the session is at.
        current: u64,
    },
    /// Only the holder may do this (409).
    NotHolder,
    /// The switch is not offered to the caller, or not offered any more (409).
    NotOffered,
    /// No device fits (422).
    NoTarget,
    /// Not one of the user's devices (422).
    UnknownDevice(String),
}

/// What the service must tell devices after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `handoff.offer` to `to`.
    Offer {
        /// The device offered to.
        to: String,
    },
    /// `handoff.moved` to the old holder.
    Moved {
        /// The old holder.
        old_holder: String,
        /// The new one.
        to: String,
    },
    /// `handoff.failed` to the holder: nobody took the session.
    Failed {
        /// The holder, who keeps it.
        holder: String,
    },
}

/// Checks the size of a state.
pub fn check_state(state: &Value) -> Result<(), Refusal> {
    let size = state.to_string().len();
    if size > MAX_STATE_BYTES {
        return Err(Refusal::StateTooLarge(size));
    }
    Ok(())
}

impl Session {
    /// A new session held by `device`.
    pub fn open(id: String, device: &str, app: String, state: Value) -> Result<Self, Refusal> {
        check_state(&state)?;
        Ok(Session {
            id,
            app,
            holder: device.to_owned(),
            version: 1,
            state,
        })
    }

    /// A progress update from `device` based on `version`; `false` when it
    /// is a replay of the update that made the current version (a retry
    /// after a lost answer), which changes nothing.
    pub fn progress(&mut self, device: &str, version: u64, state: Value) -> Result<bool, Refusal> {
        if device != self.holder {
            return Err(Refusal::NotHolder);
        }
        if version + 1 == self.version && state == self.state {
            return Ok(false);
        }
        if version != self.version {
            return Err(Refusal::StaleVersion {
                current: self.version,
            });
        }
        check_state(&state)?;
        self.version += 1;
        self.state = state;
        Ok(true)
    }
}

/// The device after `holder` in `chain` (wrapping around), skipping the
/// holder; the first one when the holder is not in it.
fn next_in_chain<'a>(chain: &'a [String], holder: &str, skip: &[&str]) -> Option<&'a str> {
    let start = chain
        .iter()
        .position(|d| d == holder)
        .map(|i| i + 1)
        .unwrap_or(0);
    (0..chain.len())
        .map(|k| chain[(start + k) % chain.len()].as_str())
        .find(|d| *d != holder && !skip.contains(d))
}

/// Where a switch goes after its offers so far: the next device of the
/// chain, else an active device that can continue the app; never the
/// holder, never a device tried before.
fn next_target(
    session: &Session,
    tried: &[&str],
    chain: &[String],
    devices: &[DeviceInfo],
) -> Option<String> {
    let known = |id: &str| devices.iter().any(|d| d.id == id);
    let after = tried.last().copied().unwrap_or(&session.holder);
    let mut skip: Vec<&str> = tried.to_vec();
    skip.push(&session.holder);
    let in_chain = chain.iter().any(|d| d == after);
    let from_chain = if in_chain || tried.is_empty() {
        next_in_chain(chain, after, &skip).filter(|d| known(d))
    } else {
        None
    };
    from_chain.map(str::to_owned).or_else(|| {
        devices
            .iter()
            .find(|d| {
                d.active
                    && !skip.contains(&d.id.as_str())
                    && d.capabilities.iter().any(|c| c == &session.app)
            })
            .map(|d| d.id.clone())
    })
}

impl Switch {
    /// A switch asked by `caller` with an optional target: from the holder
    /// with `to`, a push; from another device without `to` (or naming
    /// itself), a pull; from the holder without `to`, the chain decides.
    #[allow(clippy::too_many_arguments)]
    pub fn ask(
        id: String,
        session: &Session,
        caller: &str,
        to: Option<&str>,
        chain: &[String],
        devices: &[DeviceInfo],
        now: u64,
        ttl_ms: u64,
    ) -> Result<(Self, Notice), Refusal> {
        let target = match (caller == session.holder, to) {
            (true, Some(to)) if to == session.holder => return Err(Refusal::NoTarget),
            (true, Some(to)) => to.to_owned(),
            (false, None) => caller.to_owned(),
            (false, Some(to)) if to == caller => caller.to_owned(),
            (false, Some(_)) => return Err(Refusal::NotHolder),
            (true, None) => next_target(session, &[], chain, devices).ok_or(Refusal::NoTarget)?,
        };
        if !devices.iter().any(|d| d.id == target) {
            return Err(Refusal::UnknownDevice(target));
        }
        Ok((
            Switch {
                id,
                session_id: session.id.clone(),
                from: session.holder.clone(),
                status: SwitchStatus::Offered,
                to: Some(target.clone()),
                tried: Vec::new(),
                expires_at: now + ttl_ms,
            },
            Notice::Offer { to: target },
        ))
    }

    /// Whether `device` already gave this answer (`accept`, or a decline):
    /// a retried answer is answered with the switch as it is.
    pub fn answered(&self, device: &str, accept: bool) -> bool {
        self.tried.iter().any(|t| {
            t.device == device
                && if accept {
                    t.answer == "accepted"
                } else {
                    t.answer.starts_with("declined")
                }
        })
    }

    /// `device` accepts: it holds the session now.
    pub fn accept(
        &mut self,
        session: &mut Session,
        device: &str,
        now: u64,
    ) -> Result<Notice, Refusal> {
        if self.status != SwitchStatus::Offered || self.to.as_deref() != Some(device) {
            return Err(Refusal::NotOffered);
        }
        self.status = SwitchStatus::Accepted;
        self.tried.push(Tried {
            device: device.to_owned(),
            answer: "accepted".into(),
            at: now,
        });
        let old_holder = std::mem::replace(&mut session.holder, device.to_owned());
        Ok(Notice::Moved {
            old_holder,
            to: device.to_owned(),
        })
    }

    /// `device` declines (`reason`: incompatible, busy, ...), or the offer
    /// expired (`device` = the target, `reason` = `None`): the switch moves
    /// on, or ends unplaced.
    #[allow(clippy::too_many_arguments)]
    pub fn decline(
        &mut self,
        session: &Session,
        device: &str,
        reason: Option<&str>,
        chain: &[String],
        devices: &[DeviceInfo],
        now: u64,
        ttl_ms: u64,
    ) -> Result<Notice, Refusal> {
        if self.status != SwitchStatus::Offered || self.to.as_deref() != Some(device) {
            return Err(Refusal::NotOffered);
        }
        self.tried.push(Tried {
            device: device.to_owned(),
            answer: match reason {
                Some(reason) => format!("declined: {reason}"),
                None => "expired".into(),
            },
            at: now,
        });
        let tried: Vec<&str> = self.tried.iter().map(|t| t.device.as_str()).collect();
        match next_target(session, &tried, chain, devices) {
            Some(next) => {
                self.to = Some(next.clone());
                self.expires_at = now + ttl_ms;
                Ok(Notice::Offer { to: next })
            }
            None => {
                self.status = SwitchStatus::Unplaced;
                Ok(Notice::Failed {
                    holder: session.holder.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(id: &str, app: &str, active: bool) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            capabilities: vec![app.into()],
            active,
        }
    }

    fn chain(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn progress_needs_the_holder_and_the_current_version() {
        let mut s = Session::open("s".into(), "t1", "editor".into(), json!({"line": 1})).unwrap();
        assert_eq!(s.progress("t2", 1, json!({})), Err(Refusal::NotHolder));
        assert!(s.progress("t1", 1, json!({"line": 2})).unwrap());
        assert_eq!(s.version, 2);
        // The same update again (its answer was lost) changes nothing.
        assert!(!s.progress("t1", 1, json!({"line": 2})).unwrap());
        assert_eq!(s.version, 2);
        assert_eq!(
            s.progress("t1", 1, json!({"line": 3})),
            Err(Refusal::StaleVersion { current: 2 })
        );
        let big = json!({"x": "a".repeat(MAX_STATE_BYTES)});
        assert!(matches!(
            s.progress("t1", 2, big),
            Err(Refusal::StateTooLarge(_))
        ));
    }

    #[test]
    fn the_chain_is_walked_declines_move_on_and_the_end_is_unplaced() {
        let devices = [
            device("t1", "editor", true),
            device("t2", "editor", true),
            device("t3", "editor", true),
            device("t4", "other", true),
        ];
        let chain = chain(&["t1", "t2", "t3"]);
        let mut s = Session::open("s".into(), "t1", "editor".into(), json!({})).unwrap();
        let (mut sw, notice) =
            Switch::ask("w".into(), &s, "t1", None, &chain, &devices, 0, 60_000).unwrap();
        assert_eq!(notice, Notice::Offer { to: "t2".into() });
        let notice = sw
            .decline(&s, "t2", Some("incompatible"), &chain, &devices, 10, 60_000)
            .unwrap();
        assert_eq!(notice, Notice::Offer { to: "t3".into() });
        // Only the device offered to may answer.
        assert_eq!(sw.accept(&mut s, "t2", 20), Err(Refusal::NotOffered));
        let notice = sw.accept(&mut s, "t3", 20).unwrap();
        assert_eq!(
            notice,
            Notice::Moved {
                old_holder: "t1".into(),
                to: "t3".into()
            }
        );
        assert_eq!(s.holder, "t3");
        assert!(sw.answered("t3", true) && sw.answered("t2", false));
        assert!(!sw.answered("t2", true) && !sw.answered("t1", true));
        assert_eq!(
            sw.tried
                .iter()
                .map(|t| t.answer.as_str())
                .collect::<Vec<_>>(),
            ["declined: incompatible", "accepted"]
        );

        // From t3, the chain wraps to t1, then the capable active devices
        // (t2, not t4), never the same device twice; then unplaced.
        let (mut sw, notice) =
            Switch::ask("w2".into(), &s, "t3", None, &chain, &devices, 30, 60_000).unwrap();
        assert_eq!(notice, Notice::Offer { to: "t1".into() });
        let n = sw
            .decline(&s, "t1", None, &chain, &devices, 40, 60_000)
            .unwrap();
        assert_eq!(n, Notice::Offer { to: "t2".into() });
        let n = sw
            .decline(&s, "t2", Some("busy"), &chain, &devices, 50, 60_000)
            .unwrap();
        assert_eq!(
            n,
            Notice::Failed {
                holder: "t3".into()
            }
        );
        assert_eq!(sw.status, SwitchStatus::Unplaced);
        assert_eq!(sw.tried[0].answer, "expired");
    }

    #[test]
    fn push_pull_and_no_target() {
        let devices = [device("t1", "editor", true), device("t2", "editor", false)];
        let s = Session::open("s".into(), "t1", "editor".into(), json!({})).unwrap();
        let (_, n) = Switch::ask("a".into(), &s, "t1", Some("t2"), &[], &devices, 0, 1).unwrap();
        assert_eq!(n, Notice::Offer { to: "t2".into() });
        let (_, n) = Switch::ask("b".into(), &s, "t2", None, &[], &devices, 0, 1).unwrap();
        assert_eq!(n, Notice::Offer { to: "t2".into() }, "a pull");
        assert_eq!(
            Switch::ask("c".into(), &s, "t1", None, &[], &devices, 0, 1).unwrap_err(),
            Refusal::NoTarget,
            "no chain, and the only other device is silent"
        );
        assert_eq!(
            Switch::ask("d".into(), &s, "t1", Some("t9"), &[], &devices, 0, 1).unwrap_err(),
            Refusal::UnknownDevice("t9".into())
        );
    }
}
