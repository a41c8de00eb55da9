//! Stacks as text, one frame per line, innermost first (bcc's stackcount layout), each frame
//! with its file:line and inlined frames marked.
use std::io::{self, Write};

use crate::symbolize::{Kind, Location};

/// Write `stack`, one frame per line, each line starting with `indent`.
pub fn write_stack(out: &mut dyn Write, stack: &[Location], indent: &str) -> io::Result<()> {
    for loc in stack {
        let last = loc.lines.len().saturating_sub(1);
        for (i, line) in loc.lines.iter().enumerate() {
            match loc.kind {
                Kind::Go if line.file.is_empty() => writeln!(out, "{indent}{}", line.function)?,
                Kind::Go => {
                    let inlined = if i < last { " (inlined)" } else { "" };
                    writeln!(
                        out,
                        "{indent}{} {}:{}{inlined}",
                        line.function, line.file, line.line
                    )?
                }
                Kind::Kernel => writeln!(out, "{indent}{} [kernel]", line.function)?,
                Kind::Native | Kind::Truncated => writeln!(out, "{indent}{}", line.function)?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::Line;

    #[test]
    fn marks_inlined_frames() {
        let loc = Location {
            address: 1,
            kind: Kind::Go,
            mapping: None,
            lines: vec![
                Line {
                    function: "main.small".into(),
                    file: "/m.go".into(),
                    line: 3,
                },
                Line {
                    function: "main.big".into(),
                    file: "/m.go".into(),
                    line: 9,
                },
            ],
        };
        let mut out = Vec::new();
        write_stack(&mut out, &[loc], "  ").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  main.small /m.go:3 (inlined)\n  main.big /m.go:9\n"
        );
    }
}
