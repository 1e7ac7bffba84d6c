//! The pages in `man/` are generated from the clap definitions; this test
//! fails when one is stale or missing. `BERTH_UPDATE_MAN=1 cargo test --test
//! man` rewrites them.

use std::path::Path;

fn render(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .date("")
        .render(&mut out)
        .expect("rendering a man page into memory cannot fail");
    out
}

#[test]
fn man_pages_match_the_clap_definitions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("BERTH_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for (name, cmd) in berth::cli::man_pages() {
        let page = render(cmd);
        let path = dir.join(format!("{name}.1"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &page).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&page[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale or missing man pages: {stale:?}; run BERTH_UPDATE_MAN=1 cargo test --test man"
    );
}

#[test]
fn every_binary_has_a_page() {
    let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin");
    let pages: Vec<&str> = berth::cli::man_pages()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for entry in std::fs::read_dir(bins).unwrap() {
        let name = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .replace(".rs", "");
        assert!(
            pages.contains(&name.as_str()),
            "{name} has no man page in cli::man_pages()"
        );
    }
}
