fn main() {
    std::process::exit(berth::cli::rm::main());
}
