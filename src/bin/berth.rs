//! `berth`: the front end. `berth <command> <args>…` execs `berth-<command>`
//! found beside this executable or on PATH; `berth plugins` lists the
//! compiled-in plugins; `berth --help` lists the commands installed.
//!
//! Exit codes, shared by every berth binary: 0 success, 1 failure, 2 usage
//! error, 3 not found, 4 unauthorized (see `berth::plugin::dispatch`).

fn main() {
    std::process::exit(berth::plugin::dispatch::run(std::env::args_os().skip(1)));
}
