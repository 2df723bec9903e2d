//! HTML building blocks. Every value that reaches a page goes through
//! [`esc`]: mandate fields come from agents and are treated as hostile.

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
#[must_use]
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a JSON value's text.
#[must_use]
pub fn escv(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1a1a1a;background:#fafafa}\
header{background:#1f3a5f;color:#fff;padding:.75rem 1rem;display:flex;gap:1.25rem;align-items:center;flex-wrap:wrap}\
header a{color:#fff}header form{margin-left:auto}main{padding:1rem;max-width:72rem;margin:auto}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}th,td{border:1px solid #bbb;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#e8edf3}code,pre{font:14px/1.4 ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}\
.state{font-weight:700}.deny,.after-end{color:#9b1c1c}.allow{color:#1d6b2f}\
button,input,select{font:inherit;padding:.3rem .6rem}button.danger{background:#9b1c1c;color:#fff;border:0}\
.notice{background:#fff4d6;border:1px solid #c9a227;padding:.5rem 1rem}.ok{background:#e3f4e6;border:1px solid #1d6b2f;padding:.5rem 1rem}\
label{display:block;margin:.5rem 0}@media(max-width:40rem){th,td{display:block}}";

/// A whole page. `user` is the signed-in subject and role, when there is one.
#[must_use]
pub fn page(title: &str, user: Option<(&str, &str, &str)>, body: &str) -> String {
    let mut nav = String::new();
    if let Some((sub, role, csrf)) = user {
        let _ = write!(
            nav,
            r#"<nav aria-label="Console"><a href="/console/requests">Requests</a> · <a href="/console/mandates">Mandates</a> · <a href="/console/audit">Audit</a> · <a href="/console/facts">Facts and events</a></nav>
<form method="post" action="/console/logout"><input type="hidden" name="csrf" value="{}"><span>{} ({})</span> <button type="submit">Sign out</button></form>"#,
            esc(csrf),
            esc(sub),
            esc(role)
        );
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · Mandate</title><style>{STYLE}</style></head>
<body><header><strong>Mandate</strong>{nav}</header><main><h1>{}</h1>{body}</main></body></html>"#,
        esc(title),
        esc(title)
    )
}

/// A hidden CSRF field.
#[must_use]
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }
}
