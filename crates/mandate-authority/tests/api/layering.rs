//! The authority's layers: the JSON API (`src/http/`) and the console
//! (`src/console/`) are adapters over `src/service/`; neither runs SQL nor
//! opens a store transaction of its own.

use std::path::Path;

/// What only the storage side may write: SQL statements, the parameter
/// macro, and reads or writes on the store.
const STORAGE_ONLY: &[&str] = &[
    "params!",
    ".store.read(",
    ".store.write(",
    ".query_row(",
    ".query_map(",
    ".prepare(",
    ".prepare_cached(",
    ".execute(",
    ".execute_batch(",
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn storage_in(layer: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "{layer}: no sources found");
    let mut found = Vec::new();
    for file in files {
        // Lines joined without their indentation, so that a call chain
        // spread over lines (`s.store` / `.write(`) reads as one.
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("");
        for needle in STORAGE_ONLY {
            if text.contains(needle) {
                found.push(format!("{}: `{}`", file.display(), needle.trim()));
            }
        }
    }
    found
}

#[test]
fn the_json_api_runs_no_sql_and_opens_no_store_transaction() {
    assert_eq!(storage_in("http"), Vec::<String>::new());
}

#[test]
fn the_console_runs_no_sql_and_opens_no_store_transaction() {
    assert_eq!(storage_in("console"), Vec::<String>::new());
}

#[test]
fn the_check_sees_sql_where_it_is() {
    // The service layer holds SQL: if this finds none, the check is blind.
    assert!(!storage_in("service").is_empty());
}

#[test]
fn the_console_writes_no_markup_in_rust_every_page_is_a_template() {
    // Markup in a Rust string means escaping by hand; the templates escape
    // every expression. (The unit tests of `html.rs` feed it hostile
    // strings; they are below `#[cfg(test)]` and skipped here.)
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for needle in ["\"<", "r#\"<", "esc("] {
            if code.contains(needle) {
                found.push(format!("{}: `{needle}`", file.display()));
            }
        }
    }
    assert_eq!(found, Vec::<String>::new());
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/console");
    let pages = std::fs::read_dir(templates).unwrap().count();
    assert!(pages >= 10, "the console's templates are missing ({pages})");
    // No template turns escaping off but for the style sheet and the
    // fragments rendered by their own templates.
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/console")).unwrap()
    {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("|safe") {
            let before = &text[..i];
            let expr = before.rsplit("{{").next().unwrap_or_default();
            let expr = expr.trim_start_matches(['-', '+', '~']).trim();
            assert!(
                ["crate::console::html::style()", "fragment", "granted"].contains(&expr),
                "{}: `{expr}|safe`",
                path.display()
            );
        }
    }
}
