fn main() {
    std::process::exit(berth::cli::ls::main());
}
