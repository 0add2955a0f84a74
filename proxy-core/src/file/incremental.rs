//! Parsing a table file again after an edit, service by service: only the services whose text
//! changed are parsed (issue #11: at 1,000 services the whole parse is most of the time from an
//! edit to the dataplane).
//!
//! A file in the usual block layout (`services:` alone on a line at the left margin, then one
//! `- ` item per service) is cut at the item lines; each item's text is looked up among the last
//! parse's, and only new texts go to the parser. Anything that cutting at lines could misread is
//! parsed whole instead: JSON, flow style, anchors and aliases (`&`, `*`: an item could refer to
//! another), tabs, document markers and directives, a quote left open on a line (a quoted scalar
//! over several lines), a top-level key after `services:`. So is any text with an error, so that
//! errors keep their line and column in the whole file. Either way the result is the same
//! [`TableSpec`] as [`parse_spec`]'s (tested against it).

use std::collections::HashMap;

use super::{parse_spec, yaml_options, LoadError, ServiceSpec, TableSpec};

/// The services of the last text parsed, by their text. Keep one per file and pass every new
/// version of the file's text to [`SpecCache::parse`].
#[derive(Debug, Default)]
pub struct SpecCache {
    services: HashMap<Box<str>, ServiceSpec>,
}

impl SpecCache {
    /// Parses `text` (named `origin` in errors) as [`parse_spec`] does, parsing only the services
    /// whose text is not the same as at the last call.
    ///
    /// # Errors
    /// As [`parse_spec`].
    pub fn parse(&mut self, text: &str, origin: &str) -> Result<TableSpec, LoadError> {
        if origin.ends_with(".json") {
            // Parsed as JSON whatever it looks like (serde_json is fast anyway).
            self.services.clear();
            return parse_spec(text, origin);
        }
        if let Some(spec) = self.parse_by_service(text, origin) {
            return Ok(spec);
        }
        self.services.clear();
        let spec = parse_spec(text, origin)?;
        // Remember this version's services for the next edit, when its layout allows.
        if let Some(layout) = split(text).filter(|l| l.items.len() == spec.services.len()) {
            self.services = layout
                .items
                .iter()
                .zip(&spec.services)
                .map(|(item, service)| (Box::from(*item), service.clone()))
                .collect();
        }
        Ok(spec)
    }

    /// The table, parsed service by service, or `None` when the text must be parsed whole.
    fn parse_by_service(&mut self, text: &str, origin: &str) -> Option<TableSpec> {
        if self.services.is_empty() {
            return None;
        }
        let layout = split(text)?;
        // The header alone, with an empty list: `node`, `zone`, and their checks.
        let header = format!("{}services: []\n", layout.header);
        let mut spec = parse_spec(&header, origin).ok()?;
        let mut services = HashMap::with_capacity(layout.items.len());
        for item in &layout.items {
            let service = match self.services.get(*item) {
                Some(service) => service.clone(),
                None => parse_item(item)?,
            };
            services.insert(Box::from(*item), service.clone());
            spec.services.push(service);
        }
        self.services = services;
        Some(spec)
    }
}

/// One `- ` item as a service, or `None` if it is not exactly one valid service.
fn parse_item(item: &str) -> Option<ServiceSpec> {
    let mut parsed: Vec<ServiceSpec> =
        serde_saphyr::from_str_with_options(item, yaml_options(item.len())).ok()?;
    if parsed.len() == 1 {
        parsed.pop()
    } else {
        None
    }
}

/// A table file cut at its service items.
#[derive(Debug, PartialEq, Eq)]
struct Layout<'a> {
    /// Everything before the `services:` line.
    header: &'a str,
    /// Each service's text, from its `- ` line to the next.
    items: Vec<&'a str>,
}

/// Cuts `text` into header and items, or `None` where cutting at lines could misread it.
fn split(text: &str) -> Option<Layout<'_>> {
    let ambiguous = text.trim_start().starts_with('{')
        || text.contains(['&', '*', '\t', '\r'])
        || text.contains("\n---")
        || text.contains("\n...")
        || text.starts_with("---")
        || text.starts_with('%');
    if ambiguous {
        return None;
    }
    let mut header_end = None;
    let mut item_indent = None;
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches('\n');
        if content.matches('"').count() % 2 == 1 || content.matches('\'').count() % 2 == 1 {
            return None;
        }
        let code = content.trim_start_matches(' ');
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        let indent = content.len() - code.len();
        if header_end.is_none() {
            if indent == 0 && is_services_key(code) {
                header_end = Some(start);
            }
            continue;
        }
        let is_item = code == "-" || code.starts_with("- ");
        match item_indent {
            None if is_item => item_indent = Some(indent),
            None => return None,
            Some(_) => {}
        }
        let item_indent = item_indent?;
        if is_item && indent == item_indent {
            starts.push(start);
        } else if indent <= item_indent {
            // Another top-level key, or an item at another indentation.
            return None;
        }
    }
    // Comments and blank lines between `services:` and the first item belong to neither.
    let header_end = header_end?;
    let items = starts
        .iter()
        .zip(starts.iter().skip(1).chain(std::iter::once(&text.len())))
        .map(|(&from, &to)| &text[from..to])
        .collect();
    Some(Layout {
        header: &text[..header_end],
        items,
    })
}

/// Whether a top-level line is the `services:` key with nothing after it but a comment.
fn is_services_key(code: &str) -> bool {
    code.strip_prefix("services:").is_some_and(|rest| {
        let rest = rest.trim_start_matches(' ');
        rest.is_empty() || rest.starts_with('#')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "table.yaml";

    fn table(services: usize, changed: Option<usize>) -> String {
        let mut yaml = "# a comment\nnode: n1\nzone: z\nservices:\n".to_owned();
        for i in 0..services {
            let port = if Some(i) == changed { 8081 } else { 8080 };
            yaml.push_str(&format!(
                "  - name: default/svc-{i}\n    cluster_ips: [198.19.{}.{}]\n    ports: [{{name: http, port: 80, target_port: {port}}}]\n    endpoints:\n      - {{ip: 198.18.1.1}}\n",
                i / 250,
                i % 250 + 1
            ));
        }
        yaml
    }

    fn fixtures() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts: Vec<String> = [
            "tests/tables/full.yaml",
            "tests/tables/minimal.yaml",
            "tests/tables/many_errors.yaml",
            "tests/tables/syntax_error.yaml",
            "tests/tables/unknown_field.yaml",
            "../examples/tables/demo.yaml",
            "../backend-ipvs/tests/tables/policies.yaml",
            "../backend-ipvs/tests/tables/cluster_ips.yaml",
        ]
        .iter()
        .filter_map(|path| std::fs::read_to_string(dir.join(path)).ok())
        .collect();
        texts.push(table(5, None));
        texts.push(
            "services:\n- name: a\n  ports: [{port: 80}]\n- name: b\n  ports: [{port: 81}]\n"
                .to_owned(),
        );
        texts.push("services: []\n".to_owned());
        texts.push("services:\n  - name: a\n    ports: [{port: 80}]\nnode: late\n".to_owned());
        texts.push("services:\n  - name: a\n    ports: [{port: 80}]\n  - name: &x b\n    ports: [{port: 81}]\n".to_owned());
        texts.push("services:\n  - name: \"a\n  - b\"\n    ports: [{port: 80}]\n".to_owned());
        texts.push("{\"services\": [{\"name\": \"a\", \"ports\": [{\"port\": 80}]}]}\n".to_owned());
        texts
    }

    /// The same outcome as the whole parse: the spec, or the error's text.
    fn outcome(result: Result<TableSpec, LoadError>) -> Result<TableSpec, String> {
        result.map_err(|e| e.to_string())
    }

    #[test]
    fn every_fixture_parses_as_the_whole_parse_does_after_any_other() {
        let texts = fixtures();
        assert!(texts.len() >= 10, "fixtures missing: {}", texts.len());
        // Most take the service-by-service path, so it is what is compared.
        let cut = texts.iter().filter(|t| split(t).is_some()).count();
        assert!(
            cut >= 6,
            "only {cut} of {} fixtures cut into items",
            texts.len()
        );
        for before in &texts {
            for after in &texts {
                let mut cache = SpecCache::default();
                let _ = cache.parse(before, ORIGIN);
                // Once after another text, and again from its own services.
                for _ in 0..2 {
                    assert_eq!(
                        outcome(cache.parse(after, ORIGIN)),
                        outcome(parse_spec(after, ORIGIN)),
                        "after:\n{before}\nparsing:\n{after}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_edit_parses_only_the_changed_service_and_gives_the_whole_parse() {
        let mut cache = SpecCache::default();
        let first = table(300, None);
        assert_eq!(
            outcome(cache.parse(&first, ORIGIN)),
            outcome(parse_spec(&first, ORIGIN))
        );
        assert_eq!(cache.services.len(), 300);
        let edited = table(300, Some(150));
        let layout = split(&edited).expect("the usual layout");
        assert_eq!(layout.items.len(), 300);
        let new: Vec<_> = layout
            .items
            .iter()
            .filter(|item| !cache.services.contains_key(**item))
            .collect();
        assert_eq!(new.len(), 1, "only the edited service is new: {new:?}");
        assert_eq!(
            outcome(cache.parse(&edited, ORIGIN)),
            outcome(parse_spec(&edited, ORIGIN))
        );
        // One service more, then one fewer.
        for text in [table(301, None), table(299, Some(3))] {
            assert_eq!(
                outcome(cache.parse(&text, ORIGIN)),
                outcome(parse_spec(&text, ORIGIN))
            );
        }
    }

    #[test]
    fn ambiguous_layouts_are_parsed_whole() {
        for text in [
            "services: [{name: a, ports: [{port: 80}]}]\n",
            "services:\n  - name: &a x\n",
            "services:\n  - name: \"a\n    b\"\n",
            "services:\n  - name: a\nnode: after\n",
            "services:\n  - name: a\n - name: b\n",
            "---\nservices:\n  - name: a\n",
        ] {
            assert_eq!(split(text), None, "{text}");
        }
        let layout = split("node: n\nservices: # the list\n\n  - name: a\n  # one\n  - name: b\n")
            .expect("the usual layout");
        assert_eq!(layout.header, "node: n\n");
        assert_eq!(
            layout.items,
            vec!["  - name: a\n  # one\n", "  - name: b\n"]
        );
    }
}
