//! The listing APIs' query parameters (`GET /v1/requests`, `/v1/mandates`,
//! `/v1/audit` and the console's lists): `limit`, the opaque `cursor`, the
//! audit filter's outcome and time range. None may panic; a cursor is only
//! ever read as the list that issued it wrote it, and one list's cursor is
//! never another's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_authority::service::listing::{
    AuditFilter, Paging, audit_position, created_cursor, created_position,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(5, '\n');
    let (a, b, c, d, e) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    );
    if let Ok(p) = Paging::parse(a, b) {
        assert!((1..=500).contains(&p.limit));
    }
    let _ = AuditFilter::parse(a, b, c, d, e);
    for list in ["requests", "mandates"] {
        if let Ok(Some((ms, id))) = created_position(list, Some(text)) {
            // What decodes names the position the list's own cursor for it names.
            let own = created_cursor(list, ms, &id);
            assert_eq!(
                created_position(list, Some(&own)).ok().flatten(),
                Some((ms, id.clone()))
            );
            let other = if list == "requests" {
                "mandates"
            } else {
                "requests"
            };
            assert!(created_position(other, Some(text)).is_err());
        }
    }
    if audit_position(Some(text)).is_ok() {
        assert!(created_position("requests", Some(text)).is_err());
    }
    // The cursor of any position reads back as that position.
    let id = b.unwrap_or_default();
    let ms = i64::from(data.len() as u32) - 1_000;
    let cursor = created_cursor("mandates", ms, id);
    assert_eq!(
        created_position("mandates", Some(&cursor)).ok().flatten(),
        Some((ms, id.to_owned()))
    );
});
