//! Parse errors as the parsers give them, made safe to print: located, and quoting little of
//! the file.

use super::LoadError;
use crate::validate::escape_control;

/// Every field name of the format: a parse error may quote these whatever the file holds.
const FIELD_NAMES: &[&str] = &[
    "node",
    "zone",
    "services",
    "name",
    "cluster_ips",
    "ports",
    "external_ips",
    "load_balancer_ips",
    "load_balancer_source_ranges",
    "session_affinity",
    "external_traffic_policy",
    "internal_traffic_policy",
    "scheduler",
    "health_check_node_port",
    "idle_timeout_seconds",
    "endpoints",
    "protocol",
    "port",
    "target_port",
    "node_port",
    "client_ip",
    "timeout_seconds",
    "ip",
    "ready",
    "serving",
    "terminating",
    "weight",
    "local",
    "hints",
    "zones",
    "nodes",
];

/// The most of the file's own text a parse error quotes, in characters.
const MAX_EXCERPT_CHARS: usize = 24;

/// A parse error made safe to print. The parsers quote the input (`` unknown field `x` ``,
/// `invalid type: string "x"`), and the path may be a symlink to a file that is no table at all,
/// such as a password file. A message about the file's first line, or about a file whose first
/// key is not a table's (`node`, `zone`, `services`), quotes none of it: the file is probably
/// not a table. Any other quotes at most [`MAX_EXCERPT_CHARS`] characters at a time, control
/// characters escaped. Only the part of the message before `expected` is the file's text; after
/// it come the names the format allows, which are kept.
pub(super) fn quote_safely(error: LoadError, text: &str) -> LoadError {
    let LoadError::Parse {
        origin,
        line,
        column,
        message,
    } = error
    else {
        return error;
    };
    // Failing on the first line (or where no line is known) is failing on the first token.
    let on_first_line = line.is_none_or(|line| Some(line) <= first_content_line(text));
    let at_first_token = on_first_line || !starts_like_a_table(text);
    let split = message.find("expected").unwrap_or(message.len());
    let (quoting, schema) = message.split_at(split);
    let mut safe = String::with_capacity(message.len());
    let mut chars = quoting.chars();
    while let Some(c) = chars.next() {
        if c != '`' && c != '"' {
            safe.push_str(&escape_control(c.encode_utf8(&mut [0; 4])));
            continue;
        }
        let mut fragment = String::new();
        let mut escaped = false;
        for inner in chars.by_ref() {
            if inner == c && !escaped {
                break;
            }
            escaped = c == '"' && inner == '\\' && !escaped;
            fragment.push(inner);
        }
        safe.push(c);
        if FIELD_NAMES.contains(&fragment.as_str()) {
            // A name of the format (`missing field `services``), not the file's text.
            safe.push_str(&fragment);
        } else if at_first_token {
            safe.push('…');
        } else {
            let excerpt: String = fragment.chars().take(MAX_EXCERPT_CHARS).collect();
            safe.push_str(&escape_control(&excerpt));
            if fragment.chars().count() > MAX_EXCERPT_CHARS {
                safe.push('…');
            }
        }
        safe.push(c);
    }
    safe.push_str(&escape_control(schema));
    if at_first_token && safe != message {
        safe.push_str(" (the file's text is not quoted: it may not be a table)");
    }
    LoadError::Parse {
        origin,
        line,
        column,
        message: safe,
    }
}

/// The 1-based line of the first thing in the text that is not blank, a comment or `---`.
fn first_content_line(text: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim();
            !(line.is_empty() || line.starts_with('#') || line == "---")
        })
        .map(|index| index + 1)
}

/// Whether the text's first key is one a table has (`node`, `zone`, `services`), past blank
/// lines, comments, a document marker and JSON's `{`. A file that fails before that is most
/// likely not a table at all, and its text is none of our business to print.
fn starts_like_a_table(text: &str) -> bool {
    let start = text
        .lines()
        .take_while(|line| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#') || line == "---"
        })
        .map(|line| line.len() + 1)
        .sum::<usize>();
    let rest = text.get(start..).unwrap_or("");
    let key = rest.trim_start_matches(|c: char| c == '{' || c.is_whitespace());
    let key = key.strip_prefix(['"', '\'']).unwrap_or(key);
    ["node", "zone", "services"].iter().any(|field| {
        key.strip_prefix(field).is_some_and(|after| {
            let after = after.strip_prefix(['"', '\'']).unwrap_or(after);
            after.trim_start().starts_with(':')
        })
    })
}

pub(super) fn yaml_error(error: &serde_saphyr::Error, origin: &str) -> LoadError {
    use serde_saphyr::MessageFormatter as _;
    let location = error.location();
    let message = serde_saphyr::DefaultMessageFormatter.format_message(error.without_snippet());
    LoadError::Parse {
        origin: origin.to_owned(),
        line: location.map(|l| l.line() as usize).filter(|l| *l > 0),
        column: location.map(|l| l.column() as usize).filter(|c| *c > 0),
        // The message may quote the input: keep control characters off the terminal.
        message: escape_control(&message).into_owned(),
    }
}

pub(super) fn json_error(error: &serde_json::Error, origin: &str) -> LoadError {
    let (line, column) = (error.line(), error.column());
    let text = error.to_string();
    // serde_json appends " at line L column C"; the location goes in its own fields.
    let suffix = format!(" at line {line} column {column}");
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    LoadError::Parse {
        origin: origin.to_owned(),
        line: Some(line).filter(|l| *l > 0),
        column: Some(column).filter(|c| *c > 0),
        message: escape_control(message).into_owned(),
    }
}
