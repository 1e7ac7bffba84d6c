fn main() {
    std::process::exit(berth::cli::push::main());
}
