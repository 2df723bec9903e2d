//! The in-memory view of mission state that decisions read: every mandate's
//! state and claims, and per tenant a state snapshot (states, events, facts)
//! shared by `Arc` and replaced copy-on-write. It is refreshed from the store
//! after every commit, under its write lock, so the last refresh always sees
//! the last commit.

use std::collections::HashMap;
use std::sync::Arc;

use mandate_core::condition::Facts;
use mandate_core::id::MandateId;
use mandate_core::model::MandateClaims;
use mandate_core::state::{MandateState, StateSnapshot};
use mandate_store::sql::{Connection, params};

use crate::store;

/// One mandate the authority issued or was told about.
#[derive(Debug, Clone)]
pub struct MandateRecord {
    /// Its id.
    pub id: MandateId,
    /// Its tenant.
    pub tenant: String,
    /// The granting principal's subject.
    pub principal: String,
    /// The holding agent's subject (the caller that requested it).
    pub agent_sub: String,
    /// Its parent, for children and discovery grants.
    pub parent: Option<MandateId>,
    /// Its state.
    pub state: MandateState,
    /// Its claims.
    pub claims: Arc<MandateClaims>,
    /// The presented chain ending in it.
    pub chain: Arc<str>,
    /// Whether it was used (one-time mandates).
    pub consumed: bool,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Registry {
    mandates: HashMap<MandateId, MandateRecord>,
    snapshots: HashMap<String, Arc<StateSnapshot>>,
}

impl Registry {
    /// Loads everything from the database.
    ///
    /// # Errors
    /// When a query fails or stored facts cannot be converted.
    pub fn load(conn: &Connection) -> Result<Self, String> {
        let mut r = Self::default();
        for rec in store::all_mandates(conn).map_err(|e| e.to_string())? {
            r.put(rec);
        }
        let mut stmt = conn
            .prepare("SELECT tenant, doc FROM facts")
            .map_err(|e| e.to_string())?;
        let facts: Vec<(String, String)> = stmt
            .query_map(params![], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| e.to_string())?;
        for (tenant, doc) in facts {
            let v: serde_json::Value = serde_json::from_str(&doc).map_err(|e| e.to_string())?;
            let f = Facts::from_json(v).map_err(|e| e.to_string())?;
            r.update_snapshot(&tenant, |s| s.set_facts(f));
        }
        // Each event with the time it happened: it ends only mandates issued
        // before it, after a restart exactly as before one.
        let mut stmt = conn
            .prepare("SELECT tenant, type, subject, occurred_ms FROM events ORDER BY received_ms")
            .map_err(|e| e.to_string())?;
        let events: Vec<(String, String, Option<String>, i64)> = stmt
            .query_map(params![], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .and_then(Iterator::collect)
            .map_err(|e| e.to_string())?;
        for (tenant, ty, subject, occurred_ms) in events {
            add_event(&mut r, &tenant, &ty, subject.as_deref(), occurred_ms);
        }
        Ok(r)
    }

    fn put(&mut self, rec: MandateRecord) {
        let (tenant, id, state, consumed) =
            (rec.tenant.clone(), rec.id.clone(), rec.state, rec.consumed);
        self.mandates.insert(id.clone(), rec);
        self.update_snapshot(&tenant, |s| {
            s.set_state(id.clone(), state);
            if consumed {
                s.consume(id.clone());
            }
        });
    }

    /// Changes a tenant's snapshot (copy-on-write).
    pub fn update_snapshot(&mut self, tenant: &str, f: impl FnOnce(&mut StateSnapshot)) {
        let entry = self.snapshots.entry(tenant.to_owned()).or_default();
        f(Arc::make_mut(entry));
    }

    /// Reads these mandates from the database (to [`Registry::replace`]
    /// while the registry is locked, so no older read overwrites a newer one).
    ///
    /// # Errors
    /// When a query fails.
    pub fn read(conn: &Connection, ids: &[MandateId]) -> Result<Vec<MandateRecord>, String> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rec) = store::mandate(conn, id.as_str()).map_err(|e| e.to_string())? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Puts records read from the database in place of what it held.
    pub fn replace(&mut self, records: Vec<MandateRecord>) {
        for rec in records {
            self.put(rec);
        }
    }

    /// A mandate, when it belongs to `tenant` (another tenant's id is as
    /// unknown as one that does not exist).
    #[must_use]
    pub fn get(&self, tenant: &str, id: &str) -> Option<&MandateRecord> {
        let id = MandateId::new(id).ok()?;
        self.mandates.get(&id).filter(|m| m.tenant == tenant)
    }

    /// The tenant of a mandate the authority knows, whatever the tenant.
    #[must_use]
    pub fn tenant_of(&self, id: &str) -> Option<&str> {
        let id = MandateId::new(id).ok()?;
        self.mandates.get(&id).map(|m| m.tenant.as_str())
    }

    /// A tenant's snapshot.
    #[must_use]
    pub fn snapshot(&self, tenant: &str) -> Arc<StateSnapshot> {
        self.snapshots.get(tenant).cloned().unwrap_or_default()
    }

    /// Every mandate of a tenant.
    pub fn in_tenant<'a>(
        &'a self,
        tenant: &'a str,
    ) -> impl Iterator<Item = &'a MandateRecord> + 'a {
        self.mandates.values().filter(move |m| m.tenant == tenant)
    }

    /// Every mandate that is active or suspended and past its hard expiry.
    #[must_use]
    pub fn due_for_expiry(&self, now_secs: i64) -> Vec<MandateId> {
        self.mandates
            .values()
            .filter(|m| matches!(m.state, MandateState::Active | MandateState::Suspended))
            .filter(|m| m.claims.lifecycle.hard_expiry.secs() <= now_secs)
            .map(|m| m.id.clone())
            .collect()
    }
}

/// Records a business event (which happened at `at_ms`) in a tenant's snapshot.
pub fn add_event(reg: &mut Registry, tenant: &str, ty: &str, subject: Option<&str>, at_ms: i64) {
    let at = mandate_core::timestamp::UnixTime::from_secs(at_ms.div_euclid(1000)).ok();
    reg.update_snapshot(tenant, |s| s.add_event_at(ty, subject, at));
}

/// Replaces a tenant's facts in the snapshot.
pub fn set_facts(reg: &mut Registry, tenant: &str, facts: Facts) {
    reg.update_snapshot(tenant, |s| s.set_facts(facts));
}

/// Loads one mandate's parent id (for cascades).
///
/// # Errors
/// When the query fails.
pub fn children(conn: &Connection, id: &str) -> mandate_store::sql::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT id FROM mandates WHERE parent_id = ?1")?;
    let rows = stmt.query_map(params![id], |r| r.get(0))?;
    rows.collect()
}
