fn main() {
    std::process::exit(berth::cli::kill::main());
}
