//! How the console's pages are made: askama templates
//! (`templates/console/*.html`) with automatic HTML escaping. Mandate fields
//! come from agents and are treated as hostile: every value reaches a page
//! through a template expression, which escapes it; the only unescaped
//! insertions (`|safe`) are the style sheet below and fragments that were
//! themselves rendered by a template (the consent and widening sections,
//! rendered once so their hash is the consent evidence).

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1a1a1a;background:#fafafa}\
header{background:#1f3a5f;color:#fff;padding:.75rem 1rem;display:flex;gap:1.25rem;align-items:center;flex-wrap:wrap}\
header a{color:#fff}header form{margin-left:auto}main{padding:1rem;max-width:72rem;margin:auto}\
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}th,td{border:1px solid #bbb;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#e8edf3}code,pre{font:14px/1.4 ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}\
.state{font-weight:700}.deny,.after-end{color:#9b1c1c}.allow{color:#1d6b2f}\
button,input,select{font:inherit;padding:.3rem .6rem}button.danger{background:#9b1c1c;color:#fff;border:0}\
.notice{background:#fff4d6;border:1px solid #c9a227;padding:.5rem 1rem}.ok{background:#e3f4e6;border:1px solid #1d6b2f;padding:.5rem 1rem}\
label{display:block;margin:.5rem 0}@media(max-width:40rem){th,td{display:block}}";

/// The style sheet every page carries (a constant: no input reaches it).
#[must_use]
pub fn style() -> &'static str {
    STYLE
}

/// The signed-in user, as the page header shows them.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    /// Their subject.
    pub sub: &'a str,
    /// Their role.
    pub role: &'a str,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: &'a str,
}

/// A page that says why something is not possible.
#[derive(Debug, Template)]
#[template(path = "console/notice.html")]
pub struct Notice<'a> {
    /// The page's title.
    pub title: &'a str,
    /// The signed-in user, when there is one.
    pub me: Option<Me<'a>>,
    /// What went wrong.
    pub message: &'a str,
    /// Whether to offer signing in again.
    pub retry: bool,
}

/// A rendered page as a response, with the console's Content-Security-Policy.
#[must_use]
pub fn respond(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => {
            let mut r = Html(body).into_response();
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A notice page with `status`.
#[must_use]
pub fn notice(
    status: StatusCode,
    title: &str,
    me: Option<Me<'_>>,
    message: &str,
    retry: bool,
) -> Response {
    let mut r = respond(&Notice {
        title,
        me,
        message,
        retry,
    });
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_page_shows_is_escaped() {
        let page = Notice {
            title: "<b>t</b>",
            me: Some(Me {
                sub: r#"x" onmouseover="alert(1)"#,
                role: "principal",
                csrf: "c'sr&f",
            }),
            message: r#"<script>alert("x")</script>&'"#,
            retry: false,
        }
        .render()
        .unwrap();
        assert!(
            page.contains("&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;&#38;&#39;"),
            "{page}"
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<b>t</b>"), "{page}");
        assert!(
            page.contains(r#"x&#34; onmouseover=&#34;alert(1)"#),
            "{page}"
        );
        assert!(page.contains("c&#39;sr&#38;f"), "{page}");
    }
}
