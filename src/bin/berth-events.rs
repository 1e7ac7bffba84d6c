fn main() {
    std::process::exit(berth::cli::events::main());
}
