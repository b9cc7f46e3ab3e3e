//! The library's own dependency tree stays as small as the work needs: without the CLI, the demo
//! and fault injection, no random-number generator crates and no free-space crate; and the
//! README lists every direct dependency it has.

use std::process::Command;

fn library_dependencies(depth: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--no-default-features", "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p}", "--depth", depth])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1) // the package itself
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_library_alone_pulls_in_no_rng_or_free_space_crates() {
    let all = library_dependencies("100");
    for unwanted in ["fs4", "rand", "rand_chacha", "clap", "indicatif", "tempfile"] {
        assert!(
            !all.iter().any(|d| d == unwanted),
            "{unwanted} is in the library's tree: {all:?}"
        );
    }
}

#[test]
fn the_readme_lists_every_direct_dependency_of_the_library() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Dependencies")
        .nth(1)
        .expect("README has a Dependencies section");
    for dependency in library_dependencies("1") {
        assert!(
            section.contains(&format!("`{dependency}`")),
            "README does not list {dependency}"
        );
    }
}
