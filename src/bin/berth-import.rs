fn main() {
    std::process::exit(berth::cli::import::main());
}
