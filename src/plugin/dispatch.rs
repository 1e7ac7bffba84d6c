//! The `berth` front end, in the style of git and cargo: `berth <command>
//! <args>…` replaces itself with the program `berth-<command>`, so every
//! command is its own binary and anyone can add one.
//!
//! Lookup: first the directory holding the `berth` executable (as
//! `std::env::current_exe` reports it, symlinks resolved), then each
//! directory of `PATH` in order (empty entries are skipped, not taken as the
//! current directory). The first regular file this process may execute wins.
//!
//! The command is run with `exec`, so it gets berth's pid, standard streams
//! and environment, and its exit status and signals reach the caller as they
//! are; `berth` adds nothing.
//!
//! Built in to `berth` itself: `berth`, `berth help [<command>]`,
//! `berth --help`, `berth --version` and `berth plugins`.
//!
//! Exit codes shared by all berth binaries:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | failure (anything not below; also a built-in command that is not installed) |
//! | 2 | usage error: bad flags, unknown command, invalid config file |
//! | 3 | not found: image, blob, container, or the file given with `--config` |
//! | 4 | unauthorized: the registry refused our credentials |

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::unistd::{faccessat, AccessFlags};

use super::{load_all, render_json, render_table, PluginsArgs, PluginsFormat};
use crate::cli::exit;

/// Prefix of every command program: `berth-pull`, `berth-run`, …
pub const COMMAND_PREFIX: &str = "berth-";

/// A command shipped with berth (as its own `berth-<name>` binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinCommand {
    pub name: &'static str,
    /// One line for `berth --help`.
    pub summary: &'static str,
}

const fn cmd(name: &'static str, summary: &'static str) -> BuiltinCommand {
    BuiltinCommand { name, summary }
}

/// The commands berth ships, in the order `berth --help` lists them.
pub const BUILTIN_COMMANDS: &[BuiltinCommand] = &[
    cmd("pull", "Fetch an image from a registry into the store"),
    cmd("push", "Upload an image from the store to a registry"),
    cmd("run", "Create and start a container from an image"),
    cmd("ls", "List images, containers or snapshots"),
    cmd("rm", "Remove images or containers"),
    cmd("snapshot", "Prepare, mount, commit and remove snapshots"),
    cmd("stats", "Show a container's resource usage"),
    cmd(
        "events",
        "Show what happened in the store: pulls, starts, exits",
    ),
    cmd("kill", "Send a signal to a running container"),
    cmd("logs", "Print a container's output"),
    cmd("import", "Load images from an OCI or Docker archive"),
    cmd("export", "Write images to an OCI archive"),
    cmd("tag", "Give an image another name"),
];

/// Summary of the one command `berth` runs in-process.
const PLUGINS_SUMMARY: &str = "List the compiled-in plugins and whether each can work here";

/// A `berth-<name>` program that is not one of [`BUILTIN_COMMANDS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCommand {
    pub name: String,
    pub path: PathBuf,
}

/// The directories searched for `berth-<name>`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// The directory of the running executable, then `PATH`.
    pub fn from_env() -> SearchPath {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf));
        let path = std::env::var_os("PATH").unwrap_or_default();
        SearchPath::new(beside.into_iter().chain(std::env::split_paths(&path)))
    }

    /// The given directories in order, without empty entries or repeats.
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> SearchPath {
        let mut unique: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if !dir.as_os_str().is_empty() && !unique.contains(&dir) {
                unique.push(dir);
            }
        }
        SearchPath { dirs: unique }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The program `berth-<command>` that would run, if any.
    pub fn find(&self, command: &str) -> Option<PathBuf> {
        if !valid_name(command) {
            return None;
        }
        let file = format!("{COMMAND_PREFIX}{command}");
        self.dirs
            .iter()
            .map(|dir| dir.join(&file))
            .find(|path| is_executable_file(path))
    }

    /// Every `berth-<name>` program found that is not a built-in command,
    /// sorted by name; where a name is found twice, the first one wins.
    pub fn external_commands(&self) -> Vec<ExternalCommand> {
        let mut found: Vec<ExternalCommand> = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(name) = file_name
                    .to_str()
                    .and_then(|f| f.strip_prefix(COMMAND_PREFIX))
                else {
                    continue;
                };
                let path = entry.path();
                if valid_name(name)
                    && !is_builtin(name)
                    && !found.iter().any(|c| c.name == name)
                    && is_executable_file(&path)
                {
                    found.push(ExternalCommand {
                        name: name.to_owned(),
                        path,
                    });
                }
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }
}

/// Runs `berth` with its arguments (without the program name) and returns
/// the exit code. When a command program is found it is exec'd and this
/// never returns.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return emit(&usage(&SearchPath::from_env()));
    };
    let rest: Vec<OsString> = args.collect();
    let Some(name) = first.to_str() else {
        return unknown_command(&first.to_string_lossy());
    };
    match name {
        "-h" | "--help" => emit(&usage(&SearchPath::from_env())),
        "help" => help(&rest),
        "-V" | "--version" => emit(&format!("berth {}\n", env!("CARGO_PKG_VERSION"))),
        "plugins" => plugins(rest),
        option if option.starts_with('-') => {
            eprintln!("berth: unknown option '{option}'. See 'berth --help'.");
            exit::USAGE
        }
        command => exec_command(&SearchPath::from_env(), command, rest),
    }
}

/// The `berth` front end described as a clap command, for its man page:
/// the dispatch itself is hand-written above because any `berth-<name>` on
/// PATH is a valid subcommand, which clap cannot know in advance.
pub fn command() -> clap::Command {
    let mut cmd = clap::Command::new("berth")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Daemonless container toolkit: runs the berth-<command> programs")
        .long_about(
            "berth COMMAND [ARGS...] replaces itself with the program berth-COMMAND, found first \
             beside the berth executable, then on PATH. Any berth-<name> program on PATH is a \
             command, so third parties can add their own. `berth --help` lists the installed \
             built-in commands and every external one found.",
        )
        .after_help(crate::cli::exit::EXIT_STATUS_HELP)
        .subcommand(
            PluginsArgs::command()
                .name("plugins")
                .about(PLUGINS_SUMMARY),
        );
    for c in BUILTIN_COMMANDS {
        cmd = cmd.subcommand(clap::Command::new(c.name).about(c.summary));
    }
    cmd
}

/// `berth help [<command>]`.
fn help(rest: &[OsString]) -> i32 {
    match rest {
        [] => emit(&usage(&SearchPath::from_env())),
        [command] => match command.to_str() {
            Some("help") => emit(&usage(&SearchPath::from_env())),
            Some("plugins") => {
                let mut cmd = PluginsArgs::command().bin_name("berth plugins");
                emit(&format!("{}", cmd.render_long_help()))
            }
            Some(name) => exec_command(&SearchPath::from_env(), name, vec!["--help".into()]),
            None => unknown_command(&command.to_string_lossy()),
        },
        _ => {
            eprintln!("berth: 'berth help' takes one command name. See 'berth --help'.");
            exit::USAGE
        }
    }
}

/// Replaces this process with `berth-<command> args…`.
fn exec_command(search: &SearchPath, command: &str, args: Vec<OsString>) -> i32 {
    let Some(path) = search.find(command) else {
        if is_builtin(command) {
            eprintln!(
                "berth: '{command}' is a berth command, but {COMMAND_PREFIX}{command} is not \
                 installed (neither beside berth nor on PATH)."
            );
            return exit::FAILURE;
        }
        return unknown_command(command);
    };
    let err = Command::new(&path).args(args).exec();
    eprintln!("berth: cannot run {}: {err}", path.display());
    exit::FAILURE
}

fn unknown_command(command: &str) -> i32 {
    eprintln!(
        "berth: '{command}' is not a berth command (no {COMMAND_PREFIX}{command} beside berth or \
         on PATH). See 'berth --help'."
    );
    exit::USAGE
}

/// `berth plugins [--format table|json] [--root DIR] [--config FILE]`.
fn plugins(args: Vec<OsString>) -> i32 {
    let argv = std::iter::once(OsString::from("berth plugins")).chain(args);
    let args = match PluginsArgs::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => {
            // Help and version go to stdout with 0, mistakes to stderr with 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let cfg = match args.store.load() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("berth plugins: {e}");
            return exit::code(e.kind());
        }
    };
    let statuses = load_all(&args.store.root(&cfg), &cfg);
    match args.format {
        PluginsFormat::Table => emit(&render_table(&statuses)),
        PluginsFormat::Json => match render_json(&statuses) {
            Ok(text) => emit(&text),
            Err(e) => {
                eprintln!("berth plugins: {e}");
                exit::FAILURE
            }
        },
    }
}

/// The usage text of `berth`, listing the built-in commands installed in
/// `search` and every external command found there.
pub fn usage(search: &SearchPath) -> String {
    let (installed, missing): (Vec<&BuiltinCommand>, Vec<&BuiltinCommand>) = BUILTIN_COMMANDS
        .iter()
        .partition(|c| search.find(c.name).is_some());
    let external = search.external_commands();
    let width = installed
        .iter()
        .map(|c| c.name.len())
        .chain(external.iter().map(|c| c.name.len()))
        .chain(["plugins".len()])
        .max()
        .unwrap_or(0)
        + 3;

    let mut out = format!(
        "berth {}: daemonless container tools sharing one store\n\n\
         Usage: berth <command> [<args>...]\n       \
         berth help <command>\n       \
         berth --version\n\nCommands:\n",
        env!("CARGO_PKG_VERSION")
    );
    for c in &installed {
        out.push_str(&format!("  {:width$}{}\n", c.name, c.summary));
    }
    out.push_str(&format!("  {:width$}{PLUGINS_SUMMARY}\n", "plugins"));
    if !missing.is_empty() {
        out.push_str(&format!(
            "\nNot installed (no {COMMAND_PREFIX}<command> beside berth or on PATH):\n"
        ));
        let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
        out.push_str(&wrap(&names, "  ", 78));
    }
    if !external.is_empty() {
        out.push_str(&format!(
            "\nExternal commands ({COMMAND_PREFIX}<command> beside berth or on PATH):\n"
        ));
        for c in &external {
            out.push_str(&format!("  {:width$}{}\n", c.name, c.path.display()));
        }
    }
    out.push_str(
        "\n'berth help <command>' runs 'berth-<command> --help'.\n\n\
         Exit codes: 0 success, 1 failure, 2 usage error, 3 not found, 4 unauthorized.\n",
    );
    out
}

/// `words` joined by ", " into lines of at most `width` columns (longer
/// words stay whole), each starting with `indent`.
fn wrap(words: &[&str], indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for (i, word) in words.iter().enumerate() {
        let piece = if i + 1 < words.len() {
            format!("{word},")
        } else {
            (*word).to_owned()
        };
        if line.len() > indent.len() && line.len() + 1 + piece.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(&piece);
    }
    if line.len() > indent.len() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Writes to stdout; a closed pipe (`berth plugins | head -1`) is not an
/// error worth a message.
fn emit(text: &str) -> i32 {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::FAILURE,
        Err(e) => {
            eprintln!("berth: writing output: {e}");
            exit::FAILURE
        }
    }
}

fn is_builtin(name: &str) -> bool {
    name == "plugins" || name == "help" || BUILTIN_COMMANDS.iter().any(|c| c.name == name)
}

/// A command name becomes part of a file name: no path separators, no
/// leading dash, nothing empty.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('-') && !name.contains('/') && !name.contains('\0')
}

/// A regular file (after symlinks) that this process may execute.
fn is_executable_file(path: &Path) -> bool {
    let is_file = std::fs::metadata(path).is_ok_and(|meta| meta.is_file());
    is_file && faccessat(AT_FDCWD, path, AccessFlags::X_OK, AtFlags::AT_EACCESS).is_ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn program(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn search_order_and_listing() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let pull = program(first.path(), "berth-pull", 0o755);
        program(second.path(), "berth-pull", 0o755);
        let hello = program(second.path(), "berth-hello", 0o755);
        program(first.path(), "berth-nox", 0o644);
        program(first.path(), "other", 0o755);
        std::fs::create_dir(first.path().join("berth-dir")).unwrap();

        let search = SearchPath::new([
            first.path().to_path_buf(),
            PathBuf::new(),
            second.path().to_path_buf(),
            first.path().to_path_buf(),
        ]);
        assert_eq!(search.dirs().len(), 2);
        assert_eq!(search.find("pull"), Some(pull));
        assert_eq!(search.find("hello"), Some(hello.clone()));
        // No execute bit at all: not a command, even for root.
        assert_eq!(search.find("nox"), None);
        assert_eq!(search.find("dir"), None);
        assert_eq!(search.find("../berth-pull"), None);
        assert_eq!(search.find(""), None);

        let external = search.external_commands();
        assert_eq!(
            external,
            vec![ExternalCommand {
                name: "hello".to_owned(),
                path: hello
            }]
        );

        let text = usage(&search);
        assert!(text.contains("  pull      Fetch an image"), "{text}");
        assert!(
            text.contains("beside berth or on PATH):\n  push, run,"),
            "{text}"
        );
        assert!(text.contains("External commands"), "{text}");
        assert!(text.contains("  hello     "), "{text}");
        assert!(text.contains("  plugins   "), "{text}");
    }

    #[test]
    fn wrap_keeps_lines_short() {
        let words = ["alpha", "beta", "gamma", "delta"];
        assert_eq!(wrap(&words, "  ", 20), "  alpha, beta,\n  gamma, delta\n");
        assert_eq!(wrap(&words, "  ", 80), "  alpha, beta, gamma, delta\n");
        assert_eq!(wrap(&[], "  ", 80), "");
    }
}
