//! Folded stacks (`root;...;leaf COUNT`, the format of Brendan Gregg's stackcollapse scripts and
//! of bcc's `-f`) and SVG flame graphs drawn from them by inferno.
use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::Context as _;

use crate::symbolize::Location;

/// One folded line's frames for a stack (innermost first): root first, every inlined frame its
/// own frame, as pprof and Go's own flame graphs show them.
pub fn fold(stack: &[Location]) -> String {
    let mut frames: Vec<&str> = Vec::new();
    for loc in stack.iter().rev() {
        for line in loc.lines.iter().rev() {
            frames.push(line.function.as_str());
        }
    }
    frames
        .iter()
        .map(|f| f.replace(';', ":"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Folded lines, merged and sorted (inferno wants them sorted).
pub fn folded_lines<'a>(stacks: impl IntoIterator<Item = (&'a [Location], u64)>) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, count) in stacks {
        if count > 0 {
            *merged.entry(fold(stack)).or_default() += count;
        }
    }
    merged
        .into_iter()
        .map(|(frames, count)| format!("{frames} {count}"))
        .collect()
}

pub fn write_folded(out: &mut dyn Write, lines: &[String]) -> std::io::Result<()> {
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// An SVG flame graph of folded lines. `count_name` labels the counts ("calls", "samples").
pub fn write_svg(
    path: &Path,
    lines: &[String],
    title: &str,
    count_name: &str,
) -> anyhow::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = count_name.to_string();
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    if lines.is_empty() {
        // inferno refuses empty input; an empty graph still says what was measured.
        writeln!(
            writer,
            r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="20" y="30">{title}: no stacks</text></svg>"#
        )?;
        return Ok(());
    }
    inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut writer)
        .with_context(|| format!("drawing the flame graph into {}", path.display()))?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::{Kind, Line};

    fn loc(names: &[&str]) -> Location {
        Location {
            address: 1,
            kind: Kind::Go,
            mapping: None,
            lines: names
                .iter()
                .map(|n| Line {
                    function: n.to_string(),
                    file: String::new(),
                    line: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn folds_root_first_with_inlined_frames() {
        let stack = vec![loc(&["main.inner", "main.hot"]), loc(&["main.main"])];
        assert_eq!(fold(&stack), "main.main;main.hot;main.inner");
        let lines = folded_lines([(&stack[..], 2), (&stack[..], 3)]);
        assert_eq!(lines, vec!["main.main;main.hot;main.inner 5".to_string()]);
    }

    #[test]
    fn draws_svg() {
        let dir = std::env::temp_dir().join(format!("goprobe-fg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.svg");
        write_svg(&path, &["a;b 3".into(), "a;c 1".into()], "t", "samples").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains(">b<") || svg.contains("b (3 samples"),
            "{svg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
