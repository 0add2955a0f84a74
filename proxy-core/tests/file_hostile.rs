//! Hostile table files: what the path may point at (endless devices, FIFOs, directories, a huge
//! file, someone else's secret) never takes the reader down or ends up printed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proxy_core::file::{load_table, parse_table, read_table_text, LoadError};

/// A private directory for one test, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("proxy-core-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `path` on another thread, failing the test (instead of hanging or exhausting memory) if
/// the load takes longer than a few seconds.
fn load_bounded(path: &Path) -> Result<proxy_core::ServiceTable, LoadError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(load_table(&owned));
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("loading {} did not return within 5 s", path.display()))
}

fn symlink_to(dir: &Scratch, target: &str) -> PathBuf {
    let link = dir.join("table.yaml");
    std::os::unix::fs::symlink(target, &link).expect("symlink");
    link
}

#[test]
fn table_symlinked_to_an_endless_device_is_refused_unread() {
    for device in ["/dev/zero", "/dev/urandom"] {
        let dir = Scratch::new("device");
        let link = symlink_to(&dir, device);
        let error = load_bounded(&link).expect_err("a device is no table");
        assert!(
            matches!(
                error,
                LoadError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{device}: {error:?}"
        );
        let text = error.to_string();
        assert!(
            text.contains(&link.display().to_string()) && text.contains("not a regular file"),
            "{text}"
        );
    }
}

#[test]
fn table_path_on_a_fifo_is_refused_without_blocking() {
    let dir = Scratch::new("fifo");
    let fifo = dir.join("table.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed: {made}");
    // No writer ever opens it: opening it for reading would block forever.
    let error = load_bounded(&fifo).expect_err("a FIFO is no table");
    assert!(
        matches!(error, LoadError::NotRegular { kind: "a FIFO", .. }),
        "{error:?}"
    );
}

#[test]
fn table_path_on_a_directory_is_refused() {
    let dir = Scratch::new("dir");
    let error = load_bounded(&dir.0).expect_err("a directory is no table");
    assert!(
        matches!(
            error,
            LoadError::NotRegular {
                kind: "a directory",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn file_above_the_limit_is_refused_naming_the_limit() {
    let dir = Scratch::new("large");
    let path = dir.join("table.yaml");
    let mut text = String::from("services: []\n");
    while text.len() <= 4096 {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&path, &text).expect("write table");
    let error = read_table_text(&path, 4096).expect_err("above the limit");
    assert!(
        matches!(error, LoadError::TooLarge { limit: 4096, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("larger than the limit of 4096 bytes"),
        "{error}"
    );
    // At the limit it reads.
    let exact = read_table_text(&path, text.len() as u64).expect("within the limit");
    assert_eq!(exact, text);
}

#[test]
fn secret_file_behind_the_table_path_is_not_quoted_in_the_error() {
    let dir = Scratch::new("secret");
    let secret = dir.join("shadow");
    let hash = "$6$rounds=5000$abcdefghSALT$Zm9vYmFyYmF6cXV4SECRETHASH0123456789";
    std::fs::write(
        &secret,
        format!("root:{hash}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"),
    )
    .expect("write the fake secret");
    let link = dir.join("table.yaml");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");

    let error = load_bounded(&link).expect_err("not a table");
    let text = error.to_string();
    assert!(
        matches!(
            error,
            LoadError::Parse {
                line: Some(1),
                column: Some(1),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        text.starts_with(&format!("{}:1:1: ", link.display())),
        "{text}"
    );
    for part in ["abcdefghSALT", "SECRETHASH", "root:", "daemon"] {
        assert!(!text.contains(part), "{part:?} quoted in: {text}");
    }
    assert!(text.contains("not quoted"), "{text}");

    // The same in JSON, after a table's first key, and on the first line of what looks like a
    // table.
    for fake in [
        format!("{{\"{hash}\": 1}}"),
        format!("{{\"services\": [], \"{hash}\": 1}}"),
        format!("services: {hash}\n"),
    ] {
        std::fs::write(&secret, &fake).expect("write the fake secret");
        let text = load_bounded(&link).expect_err("not a table").to_string();
        assert!(
            text.starts_with(&format!("{}:1:", link.display())),
            "{text}"
        );
        assert!(!text.contains("SECRETHASH"), "quoted in: {text}");
    }
}

#[test]
fn error_inside_a_table_quotes_a_short_escaped_excerpt() {
    // A long unknown key with an ESC (YAML's `\e`) past the excerpt's end.
    let long = format!("port{}\\e[31m", "x".repeat(100));
    let text = format!("services:\n  - name: web\n    ports: [{{port: 80}}]\n    \"{long}\": 1\n");
    let error = parse_table(&text, "t.yaml").expect_err("unknown field");
    let shown = error.to_string();
    assert!(
        shown.starts_with("t.yaml:4:5: unknown field `portxxxx"),
        "{shown}"
    );
    assert!(
        !shown.contains(&"x".repeat(30)),
        "too long an excerpt: {shown}"
    );
    assert!(shown.contains("…`, expected one of"), "{shown}");
    assert!(
        !shown.chars().any(char::is_control),
        "raw control character: {shown:?}"
    );

    // An escape inside a short excerpt is shown escaped.
    let text = "services:\n  - name: web\n    ports: [{port: 80, protocol: \"t\\ecp\"}]\n";
    let shown = parse_table(text, "t.yaml")
        .expect_err("bad protocol")
        .to_string();
    assert!(shown.contains("unknown variant `t\\u{1b}cp`"), "{shown}");
}

#[test]
fn control_characters_in_names_reject_the_entry_and_are_shown_escaped() {
    let text =
        "services:\n  - name: \"default/we\\nb\"\n    ports: [{name: \"ht\\etp\", port: 80}]\n";
    let error = parse_table(text, "t.yaml").expect_err("control characters");
    let shown = error.to_string();
    assert!(
        shown.contains(
            "services[default/we\\nb].name: \"we\\nb\" contains the control character U+000A"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("services[default/we\\nb].ports[ht\\u{1b}tp].name"),
        "{shown}"
    );
    for line in shown.lines().skip(1) {
        assert!(
            line.starts_with("  services["),
            "forged line {line:?} in:\n{shown}"
        );
    }

    for (field, value) in [("node", "\"node-a\\0\""), ("zone", "\"z\\n\"")] {
        let text = format!("{field}: {value}\nservices: []\n");
        let error = proxy_core::file::parse_spec(&text, "t.yaml").expect_err("control character");
        let shown = error.to_string();
        assert!(
            matches!(error, LoadError::Invalid { .. }) && shown.contains(&format!("\n  {field}: ")),
            "{shown}"
        );
        assert!(shown.lines().count() == 2, "{shown:?}");
    }
}
