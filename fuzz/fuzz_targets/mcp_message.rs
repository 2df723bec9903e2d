//! The MCP proxy's message parser on arbitrary bytes: it never panics; what
//! it accepts reads back as the same kind of message once this proxy's
//! `_meta` keys are removed; a `tools/call` it accepts either names a tool
//! or is refused with an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_enforce::mcp::message;

fuzz_target!(|data: &[u8]| {
    let Ok(mut m) = message::parse(data, 1 << 20) else {
        return;
    };
    if m.method() == Some("tools/call") {
        if let Ok(call) = message::tool_call(&m) {
            let _ = mandate_enforce::mcp::valid_tool_name(call.name);
        }
    }
    let _ = message::meta(&m);
    let kind = m.kind.clone();
    message::strip_meta(&mut m);
    let again = message::parse(&m.to_bytes(), 1 << 21).expect("a message it wrote reads back");
    assert_eq!(again.kind, kind);
});
