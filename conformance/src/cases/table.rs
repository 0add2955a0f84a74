//! The README's case table, generated from the case list.

use super::{plan, scenarios, Backend, Plan};

/// The case table for the README: one row per flow with its origin and what each backend does
/// with it, then every known failure with its reason. A test keeps the README in step.
pub fn markdown_table() -> String {
    use std::fmt::Write as _;
    let mut out = String::from("| scenario | flow (kube-proxy's name) | origin |");
    for backend in Backend::ALL {
        let _ = write!(out, " {} |", backend.name());
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---|".repeat(Backend::ALL.len()));
    out.push('\n');
    let mut failures: Vec<(&'static str, Vec<String>)> = Vec::new();
    let mut deviations: Vec<(String, Vec<String>)> = Vec::new();
    for scenario in scenarios() {
        for flow in &scenario.flows {
            let _ = write!(
                out,
                "| `{}` | {} | {} |",
                scenario.id, flow.name, scenario.origin
            );
            for backend in Backend::ALL {
                let cell = match plan(backend, &scenario, flow) {
                    Plan::Run => "run",
                    Plan::RunWithoutSourceCheck(_) => "run, source not checked",
                    Plan::Skip(_) => "skip",
                    Plan::KnownFailure(why) => {
                        let entry =
                            format!("{}: `{}` / {}", backend.name(), scenario.id, flow.name);
                        match failures.iter_mut().find(|(w, _)| *w == why) {
                            Some((_, list)) => list.push(entry),
                            None => failures.push((why, vec![entry])),
                        }
                        "**known failure**"
                    }
                    Plan::SharedDeviation { how, source } => {
                        let entry =
                            format!("{}: `{}` / {}", backend.name(), scenario.id, flow.name);
                        let why = format!("{how} (kube-proxy: {source})");
                        match deviations.iter_mut().find(|(w, _)| *w == why) {
                            Some((_, list)) => list.push(entry),
                            None => deviations.push((why, vec![entry])),
                        }
                        "deviates, as kube-proxy does"
                    }
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    out.push_str("\nKnown failures (bugs to fix), by reason:\n");
    for (why, flows) in failures {
        let _ = writeln!(out, "\n- {why}:");
        for flow in flows {
            let _ = writeln!(out, "  - {flow}");
        }
    }
    if !deviations.is_empty() {
        out.push_str(
            "\nDeviations kube-proxy's own mode shares (run, expected to fail; not counted as \
             passes), by reason:\n",
        );
        for (why, flows) in deviations {
            let _ = writeln!(out, "\n- {why}:");
            for flow in flows {
                let _ = writeln!(out, "  - {flow}");
            }
        }
    }
    out
}

#[cfg(test)]
mod readme {
    /// The README's case table is the case list's: `UPDATE_README=1 cargo test -p conformance`
    /// rewrites it.
    #[test]
    fn the_readme_shows_the_case_list() {
        const BEGIN: &str =
            "<!-- cases:begin (generated: UPDATE_README=1 cargo test -p conformance) -->\n";
        const END: &str = "<!-- cases:end -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let start = readme.find(BEGIN).expect("begin marker") + BEGIN.len();
        let end = readme.find(END).expect("end marker");
        let table = super::markdown_table();
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
            std::fs::write(path, updated).expect("write README.md");
        } else {
            assert_eq!(
                &readme[start..end],
                table,
                "README.md's case table is stale: UPDATE_README=1 cargo test -p conformance"
            );
        }
    }
}
