//! What the audit log costs the disk per decision: bytes the process sends
//! to storage for each decision record, with decisions spread over many
//! mandates (as a real authority's are) or all under one (as the load
//! script's are), through the real store, group commit included.
//!
//! ```text
//! cargo run --release -p mandate-bench --example audit_writes -- RECORDS MANDATES [--schema-3] [--hops K] [--offline]
//! ```
//!
//! 32 tasks each record decisions one after the other, as 32 connections
//! would; every record names a mandate picked at random among `MANDATES`
//! and is about the size of a real decision record. `--schema-3` puts the
//! audit log's indexes back as schema version 3 had them (the index of every
//! record by `mandate_id`, none of version 4's partial ones), so the two
//! layouts can be compared in one build. `--hops K` makes each mandate the
//! leaf of a K-hop delegation chain, each ancestor delegating to ten (so
//! 2,000 leaves have 200 parents and 20 grandparents): each decision names
//! K mandates, as a delegated agent's does; every mandate of the chain is
//! registered with the authority, so each record is filed under its leaf
//! alone, unless `--offline` says the hops were derived offline and never
//! registered (each record then filed under every mandate of its chain).
//! The bytes are Linux's
//! `write_bytes` of `/proc/self/io` (WAL frames, SQLite's checkpoints into
//! the database, the signed checkpoint file), over the recording only.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    reason = "a measuring tool: any failure ends it, and it reports ratios"
)]

use std::sync::Arc;
use std::time::Instant;

use mandate_core::keys::{Algorithm, SigningKey};
use mandate_store::Store;
use mandate_store::audit::CanonicalBody;

/// Concurrent writers, as connections to the authority.
const TASKS: usize = 32;

fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A mandate id as the authority makes them (random, so records of one
/// mandate are not next to each other in an index).
fn mandate_id(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    x ^= x >> 29;
    format!(
        "mnd_{x:016x}{:08x}",
        i.wrapping_mul(2_654_435_761) & 0xFFFF_FFFF
    )
}

/// A decision record's body of the usual size (~1 KB) for `id`, the first
/// `registered` mandates of its chain registered with the authority.
fn body(chain: &[String], registered: usize, n: u64) -> CanonicalBody {
    let value = serde_json::json!({
        "action": "search",
        "agent_instance": "inst-7f2a-b8c4",
        "allow": !n.is_multiple_of(17),
        "chain": chain,
        "enforcer": "gateway-1",
        "obligations": [],
        "reasons": if n.is_multiple_of(17) { vec!["outside_scope"] } else { Vec::new() },
        "registered": registered,
        "request": {
            "action": {"name": "search"},
            "context": {"htm": "POST", "htu": "https://pep.example/search"},
            "resource": {
                "id": "https://vendor-portal.example.com/search",
                "properties": {
                    "category": "logistics",
                    "contract_template": "standard-logistics-v3",
                    "region": "north-america",
                    "spend_tier": "pre-approved"
                },
                "type": "vendor_portal"
            },
            "subject": {"id": "urn:agent:procurement/vendor-sourcing@3.2", "type": "agent"}
        },
        "pop": {"jkt": "Ld3mkmU4V4Lz1BgmQG0Ij8uV7bC2w3xG0mAQz9T5b9E", "jti": format!("{n:032x}")},
        "purpose": "Source three logistics vendors for the Q3 expansion and shortlist them",
        "state_version": 42,
    });
    CanonicalBody::new(&value).unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let mandates: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let rest: Vec<String> = args.collect();
    let schema_3 = rest.iter().any(|a| a == "--schema-3");
    let offline = rest.iter().any(|a| a == "--offline");
    let hops: u64 = rest
        .iter()
        .position(|a| a == "--hops")
        .and_then(|i| rest.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let dir = std::env::temp_dir().join(format!("mandate-audit-writes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store =
        Arc::new(Store::open(&dir, SigningKey::from_seed(Algorithm::EdDSA, [5; 32])).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Each mandate's chain, root first: its own ancestors, then itself.
    let ids: Arc<Vec<Vec<String>>> = Arc::new(
        (0..mandates)
            .map(|m| {
                (1..hops)
                    .rev()
                    .map(|up| mandate_id((m / 10u64.pow(up as u32)) | (up << 40)))
                    .chain(std::iter::once(mandate_id(m)))
                    .collect()
            })
            .collect(),
    );
    runtime.block_on(async {
        if schema_3 {
            store
                .write(|tx| {
                    tx.conn().execute_batch(
                        "DROP INDEX audit_transitions; DROP INDEX audit_transitions_by;
                         DROP INDEX audit_events; CREATE INDEX audit_mandate ON audit(mandate_id)",
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        let before = written_bytes();
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS as u64)
            .map(|t| {
                let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
                tokio::spawn(async move {
                    let mut n = t;
                    while n < records {
                        // A random mandate for each record (a fixed
                        // sequence, the same for both layouts).
                        let pick = (n.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 17) % mandates;
                        let chain = ids.get(pick as usize).cloned().unwrap_or_default();
                        let registered = if offline { 1 } else { chain.len() };
                        let b = body(&chain, registered, n);
                        let id = chain.last().cloned().unwrap_or_default();
                        store
                            .write(move |tx| {
                                tx.audit_canonical(Some("t"), "decision", Some(&id), &b)
                            })
                            .await
                            .unwrap();
                        n += TASKS as u64;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let bytes = written_bytes().saturating_sub(before);
        let per = bytes as f64 / records as f64;
        println!(
            "{records} decision records over {mandates} mandate(s), {hops}-hop chains{}{}: {per:.0} bytes written a record, {:.0} records/s",
            if offline { " derived offline" } else { "" },
            if schema_3 { ", schema 3's indexes" } else { "" },
            records as f64 / secs,
        );
        // How the first mandate ended, asked of a log that holds its
        // decisions: through the transitions' index, and by reading every
        // record of the mandate as the console's pages did before schema 4.
        let first = ids.first().and_then(|c| c.last()).cloned().unwrap_or_default();
        let revoked = first.clone();
        store
            .write(move |tx| {
                tx.audit(
                    Some("t"),
                    "revoked",
                    Some(&revoked),
                    serde_json::json!({"by": "principal"}),
                )
            })
            .await
            .unwrap();
        let (by_index, by_reading) = store
            .read(|c| {
                // (Once first, so the statement is prepared and cached as a
                // server's would be.)
                mandate_store::audit::ended(c, &first)?;
                let t = Instant::now();
                let end = mandate_store::audit::ended(c, &first)?;
                let by_index = t.elapsed();
                let t = Instant::now();
                let all = mandate_store::audit::records_for_tree(c, &first)?;
                let read_end = all.iter().find(|r| r.kind == "revoked").cloned();
                let by_reading = t.elapsed();
                assert_eq!(end, read_end);
                Ok((by_index, by_reading))
            })
            .unwrap();
        println!(
            "  how mandate 1 ended ({} records name it): {:.1} us through the index, {:.1} ms reading its records",
            records.div_ceil(mandates),
            by_index.as_secs_f64() * 1e6,
            by_reading.as_secs_f64() * 1e3,
        );
    });
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
