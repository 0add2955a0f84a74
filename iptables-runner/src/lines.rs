//! Reading a failed restore: which line of our input the tool blames, and our lines around it
//! (kube-proxy's `ExtractLines`, `pkg/util/iptables/iptables.go`), so an error shows the rule
//! that failed rather than only a line number.

/// The 1-based input line a failed restore names: `Error occurred at line: N` (nft variant) or
/// `...: line N failed` (legacy).
pub fn failing_line(stderr: &str) -> Option<usize> {
    for line in stderr.lines() {
        if let Some(rest) = line.split("Error occurred at line:").nth(1) {
            return rest.trim().parse().ok();
        }
        if let Some(rest) = line.split(": line ").nth(1) {
            if let Some(n) = rest.strip_suffix(" failed") {
                return n.trim().parse().ok();
            }
        }
    }
    None
}

/// `input`'s lines within `around` of 1-based `line`, numbered, the blamed one marked `>`.
pub fn extract_lines(input: &str, line: usize, around: usize) -> String {
    let first = line.saturating_sub(around).max(1);
    input
        .lines()
        .enumerate()
        .map(|(i, text)| (i + 1, text))
        .filter(|(n, _)| *n >= first && *n <= line + around)
        .map(|(n, text)| {
            let mark = if n == line { '>' } else { ' ' };
            format!("  {mark} {n:>5} {text}\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_line_reads_both_formats() {
        let nft = "iptables-nft-restore v1.8.9 (nf_tables): Chain 'X' does not exist\n\
                   Error occurred at line: 4\nTry `iptables-nft-restore -h'";
        assert_eq!(failing_line(nft), Some(4));
        assert_eq!(failing_line("iptables-restore: line 12 failed"), Some(12));
        assert_eq!(failing_line("something else"), None);
    }

    #[test]
    fn extract_lines_marks_the_failing_one() {
        let input = "a\nb\nc\nd\ne\n";
        assert_eq!(
            extract_lines(input, 3, 1),
            "        2 b\n  >     3 c\n        4 d\n"
        );
        assert_eq!(extract_lines(input, 1, 1), "  >     1 a\n        2 b\n");
    }
}
