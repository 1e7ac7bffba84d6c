fn main() {
    std::process::exit(berth::cli::tag::main());
}
