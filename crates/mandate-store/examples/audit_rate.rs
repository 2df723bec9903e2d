//! Audit append rate with durable group commit: WRITERS concurrent writers
//! each append RECORDS decision-sized records, every one acknowledged only
//! once its batch is on disk; then the whole log is verified.
//!
//!     cargo run --release -p mandate-store --example audit_rate [WRITERS=64] [RECORDS=200]

use std::sync::Arc;
use std::time::Instant;

use mandate_core::keys::{Algorithm, SigningKey};
use mandate_store::{Store, audit};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let writers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let records: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = std::env::temp_dir().join(format!("mandate-audit-rate-{}", std::process::id()));
    let key = SigningKey::from_seed(Algorithm::EdDSA, [7; 32]);
    let public = key.verifying_key()?;
    let store = Arc::new(Store::open(&dir, key)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0..records {
                    let body = json!({"chain": ["mnd-root", "mnd-child"], "principal": "vp@example.com", "agent": "urn:agent:x",
                        "action": "search", "resource": {"type": "vendor_portal", "id": "https://vendor-portal.example.com/search"},
                        "decision": "allow", "reasons": [], "writer": w, "i": i});
                    store.write(move |tx| tx.audit(Some("acme"), "decision", Some("mnd-child"), body)).await.map(|_| ())?;
                }
                Ok::<(), mandate_store::StoreError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let appended = writers * records;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "append: {appended} records acknowledged durable in {secs:.2} s = {:.0} records/s",
        appended as f64 / secs
    );
    store.close();
    let conn = mandate_store::open_read_only(&dir)?;
    let started = Instant::now();
    let report = audit::verify(&conn, &mandate_store::checkpoint_path(&dir), &public)?;
    let secs = started.elapsed().as_secs_f64();
    assert!(report.intact, "{report:?}");
    println!(
        "verify: {} records in {secs:.3} s = {:.0} records/s",
        report.records,
        report.records as f64 / secs
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
