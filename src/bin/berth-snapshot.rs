fn main() {
    std::process::exit(berth::cli::snapshot::main());
}
