//! What the audit crate's test ledgers are built from.

use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::Entry;

/// A successful event of `id` in `role`, at a fixed time.
pub fn entry(id: &str, role: Role, body: Body) -> Entry {
    Entry {
        time_ms: 1_700_000_000_000,
        actor: Actor {
            id: id.into(),
            role,
        },
        outcome: Outcome::Success,
        body,
    }
}
