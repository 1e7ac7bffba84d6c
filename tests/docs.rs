//! README.md must stay true to the code it describes.

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn readme_carries_the_config_reference() {
    assert!(
        readme().contains(berth::config::CONFIG_REFERENCE.trim_end()),
        "README's Configuration section differs from src/config/reference.toml"
    );
}

#[test]
fn readme_documents_every_exit_code() {
    let readme = readme();
    for line in berth::cli::exit::EXIT_STATUS_HELP.lines().skip(1) {
        let (code, _) = line.trim().split_once(' ').unwrap();
        assert!(
            readme.contains(&format!("| {code} |")),
            "exit code {code} missing from README's table"
        );
    }
}

#[test]
fn readme_opens_with_the_two_commands() {
    let readme = readme();
    let block = readme
        .split("```sh")
        .nth(1)
        .expect("a sh block near the top");
    let block = block.split("```").next().unwrap();
    for script in ["scripts/demo.sh", "scripts/test.sh"] {
        assert!(block.contains(script), "first command block lacks {script}");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        assert!(path.is_file(), "{script} does not exist");
    }
}
