fn main() {
    std::process::exit(berth::cli::logs::main());
}
