fn main() {
    std::process::exit(berth::cli::export::main());
}
