//! The standard-library field offsets goprobe ships for binaries without DWARF
//! (`goabi::stdlib::KNOWN`, used by `funclatency --by` and the packs) against the DWARF of a
//! fresh build by every Go toolchain found: each shipped offset and type must be what the
//! compiler laid out, and every toolchain's version must be one the table says it checked.
//!
//! Toolchains as in `common` (CI: Go 1.19, 1.21 and 1.27; `cargo xtask test --full`: the whole
//! matrix). Without any, the test prints why and passes.
mod common;

use common::{go_cmd, run, toolchains};
use goprobe_inspect::goabi::{Types, dwarf::Sections, stdlib};

const PROGRAM: &str = r#"package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
)

func main() {
	r, _ := http.NewRequest("GET", "http://example.com/x?y=1", nil)
	u, _ := url.Parse("http://example.com/")
	fmt.Println(r.Method, r.URL.Path, r.Host, r.RemoteAddr, r.RequestURI, r.Proto, r.ContentLength, u.Scheme, u.RawQuery)
	// Never run: links the server (net/http.response) and the client (net/http.Response).
	if len(os.Args) > 5 {
		resp, err := http.Get(os.Args[1])
		if err == nil {
			fmt.Println(resp.Status, resp.StatusCode)
		}
		http.ListenAndServe(os.Args[2], nil)
	}
}
"#;

#[test]
fn shipped_offsets_match_the_dwarf_of_every_toolchain() {
    let toolchains = toolchains();
    if toolchains.is_empty() {
        eprintln!("no Go toolchain found: nothing to check");
        return;
    }
    let work = std::env::temp_dir().join(format!("goprobe-stdlib-offsets-{}", std::process::id()));
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.go"), PROGRAM).unwrap();
    std::fs::write(src.join("go.mod"), "module offsets\n\ngo 1.19\n").unwrap();
    let mut failures = Vec::new();
    for tc in &toolchains {
        let minor = stdlib::minor(&tc.version).expect("a go1.N version");
        if !stdlib::VERIFIED_MINORS.contains(&minor) {
            failures.push(format!(
                "{}: not in VERIFIED_MINORS: check its layouts and add it",
                tc.version
            ));
            continue;
        }
        let out = work.join(format!("prog-{}", tc.version));
        let mut build = go_cmd(tc, &src, &work);
        build.args(["build", "-o"]).arg(&out).arg(".");
        if let Err(e) = run(build) {
            failures.push(format!("{}: {e}", tc.version));
            continue;
        }
        let data = std::fs::read(&out).unwrap();
        let sections = Sections::load(&data).expect("a default build has DWARF");
        let mut dwarf = sections.types();
        let mut types = Types::with_builtins();
        let mut checked = 0;
        for known in stdlib::KNOWN {
            let Some(id) = dwarf.named_type(&mut types, known.name) else {
                failures.push(format!("{}: no {} in DWARF", tc.version, known.name));
                continue;
            };
            let fields = types.get(id).fields.clone();
            for field in known.fields {
                let Some(&(_, _, offset)) = field
                    .offsets
                    .iter()
                    .find(|(from, to, _)| (*from..=*to).contains(&minor))
                else {
                    failures.push(format!(
                        "{}: {}.{} has no offset for 1.{minor}",
                        tc.version, known.name, field.name
                    ));
                    continue;
                };
                match fields.iter().find(|f| f.name == field.name) {
                    Some(f) if f.offset == offset && types.get(f.ty).name == field.ty => {
                        checked += 1;
                    }
                    Some(f) => failures.push(format!(
                        "{}: {}.{} is {} at {}, the table says {} at {offset}",
                        tc.version,
                        known.name,
                        field.name,
                        types.get(f.ty).name,
                        f.offset,
                        field.ty
                    )),
                    None => failures.push(format!(
                        "{}: {} has no field {}",
                        tc.version, known.name, field.name
                    )),
                }
            }
        }
        eprintln!("{}: {checked} offsets checked", tc.version);
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
