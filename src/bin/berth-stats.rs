fn main() {
    std::process::exit(berth::cli::stats::main());
}
